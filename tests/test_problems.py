"""P2–P8 against §1 of the protocol: parameter counts, shapes, TF padding and initialisers, losses, state, training.

Every expected value is derived here from the spec's layer lists or from numpy reference formulas, never read back
from the implementation. Models run on small batches (and, where the architecture allows, small images) on CPU.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats
from torch import nn

from bench.spec import SpecError, make_spec
from problems import PROBLEMS
from problems._char_rnn import TFLSTMLayer
from problems._image import sample_categorical
from problems._layers import Conv2d, ConvTranspose2d, MaxPool2d, tf_same_pads
from problems.tolstoi_char_rnn import char_batches

CPU = torch.device("cpu")
CONF = Path(__file__).resolve().parents[1] / "conf"
NAMES = ["mnist_vae", "fmnist_vae", "fmnist_2c2d", "cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164",
         "tolstoi_char_rnn"]
NUM_CLASSES = {"fmnist_2c2d": 10, "cifar10_3c3d": 10, "cifar100_allcnnc": 100, "svhn_wrn164": 10}
TRUNC_STD = float(stats.truncnorm(-2, 2).std())  # std of N(0, 1) truncated to ±2 (Keras divides by it)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small convolutions on a shared 2-core machine: one intra-op thread avoids oversubscription (10–50× faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def yaml_settings(name: str) -> dict:
    return yaml.safe_load((CONF / "problem" / f"{name}.yaml").read_text())


def make(name: str, **overrides) -> object:
    settings = {k: v for k, v in yaml_settings(name).items() if k != "name"}
    settings.update(overrides)
    return PROBLEMS.get(name)(settings, 0, CPU)


def build(name: str, seed: int = 0, **overrides) -> tuple[object, nn.Module]:
    problem = make(name, **overrides)
    torch.manual_seed(seed)
    return problem, problem.build_model()


def images(name: str, n: int, side: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if name in ("mnist_vae", "fmnist_vae", "fmnist_2c2d"):
        x = torch.rand(n, 1, 28, 28, generator=g)
    else:
        s = side or 32
        x = torch.randn(n, 3, s, s, generator=g)
    y = torch.randint(0, NUM_CLASSES.get(name, 10), (n,), generator=g)
    return x, y


def chars(n: int, t: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 83, (n, t), generator=g), torch.randint(0, 83, (n, t), generator=g)


def adam_hp() -> dict:
    hp = yaml.safe_load((CONF / "optimizer" / "adam.yaml").read_text())
    hp.pop("name")
    return hp


# ---------------------------------------------------------------------------------------------- config & spec
SPEC_TABLE = {  # §1 table: batch size, epochs, TF default weight decay
    "mnist_vae": (64, 50, 0.0), "fmnist_vae": (64, 100, 0.0), "fmnist_2c2d": (128, 100, 0.0),
    "cifar10_3c3d": (128, 100, 0.002), "cifar100_allcnnc": (256, 350, 0.0005), "svhn_wrn164": (128, 160, 0.0005),
    "tolstoi_char_rnn": (50, 200, 0.0),
}


@pytest.mark.parametrize("name", NAMES)
def test_yaml_defaults_match_the_spec_table_and_validate(name: str) -> None:
    cfg = yaml_settings(name)
    assert cfg["name"] == name
    assert (cfg["batch_size"], cfg["num_epochs"], cfg["weight_decay"]) == SPEC_TABLE[name]
    assert cfg["size"] == "full"
    spec = make_spec(name, "adam", adam_hp(), problem_settings=cfg)
    assert spec.problem_settings["batch_size"] == SPEC_TABLE[name][0]
    assert PROBLEMS.get(name).study_name == name


@pytest.mark.parametrize("name", ["mnist_vae", "fmnist_vae", "fmnist_2c2d", "tolstoi_char_rnn"])
def test_problems_without_l2_reject_weight_decay_and_add_none(name: str) -> None:
    cfg = yaml_settings(name)
    with pytest.raises(SpecError, match="weight_decay"):
        make_spec(name, "adam", adam_hp(), problem_settings={**cfg, "weight_decay": 0.01})
    problem, model = build(name)
    assert problem.regularizer(model) == 0.0


def test_invalid_problem_options_are_rejected() -> None:
    with pytest.raises(SpecError, match="seq_length"):
        make_spec("tolstoi_char_rnn", "adam", adam_hp(), problem_settings={**yaml_settings("tolstoi_char_rnn"),
                                                                          "seq_length": 0})
    with pytest.raises(SpecError, match="cifar100_offset_bug"):
        make_spec("cifar100_allcnnc", "adam", adam_hp(),
                  problem_settings={**yaml_settings("cifar100_allcnnc"), "cifar100_offset_bug": "yes"})
    with pytest.raises(SpecError, match="bn_epsilon"):
        make_spec("svhn_wrn164", "adam", adam_hp(), problem_settings={**yaml_settings("svhn_wrn164"), "bn_epsilon": 0})


# --------------------------------------------------------------------------------------------- parameter counts
def conv(k: int, c_in: int, c_out: int, bias: bool = True) -> int:
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def wrn_count() -> int:
    widths, total = [16, 64, 128, 256], conv(3, 3, 16, bias=False)
    for i in range(1, 4):
        c_in, c = widths[i - 1], widths[i]
        total += 2 * c_in + conv(1, c_in, c, False) + conv(3, c_in, c, False) + 2 * c + conv(3, c, c, False)  # unit 1
        total += 2 * c + conv(3, c, c, False) + 2 * c + conv(3, c, c, False)  # unit 2 (BN γ, β per channel)
    return total + 2 * 256 + dense(256, 10)


VAE_COUNT = (conv(4, 1, 64) + 2 * conv(4, 64, 64) + 2 * dense(7 * 7 * 64, 8)                   # encoder
             + dense(8, 24) + dense(24, 49) + conv(4, 1, 64) + 2 * conv(4, 64, 64) + dense(14 * 14 * 64, 784))
EXPECTED_PARAMS = {
    "mnist_vae": VAE_COUNT,
    "fmnist_vae": VAE_COUNT,
    "fmnist_2c2d": conv(5, 1, 32) + conv(5, 32, 64) + dense(7 * 7 * 64, 1024) + dense(1024, 10),
    "cifar10_3c3d": conv(5, 3, 64) + conv(3, 64, 96) + conv(3, 96, 128) + dense(3 * 3 * 128, 512) + dense(512, 256)
    + dense(256, 10),
    "cifar100_allcnnc": conv(3, 3, 96) + 2 * conv(3, 96, 96) + conv(3, 96, 192) + 3 * conv(3, 192, 192)
    + conv(1, 192, 192) + conv(1, 192, 100),
    "svhn_wrn164": wrn_count(),
    # embedding 83×128; per layer one TF kernel [128 + 128, 4·128] and one bias 4·128; softmax_w 128×83, softmax_b 83
    "tolstoi_char_rnn": 83 * 128 + 2 * ((128 + 128) * 4 * 128 + 4 * 128) + 128 * 83 + 83,
}


@pytest.mark.parametrize("name", NAMES)
def test_num_parameters_match_the_layer_list(name: str) -> None:
    problem, model = build(name)
    assert problem.num_parameters(model) == EXPECTED_PARAMS[name]


def test_parameter_counts_recorded() -> None:
    """The arithmetic above, spelled out (DeepOBS quotes 3 274 634 for 2c2d and 895 210 for 3c3d)."""
    assert EXPECTED_PARAMS == {"mnist_vae": 10_151_489, "fmnist_vae": 10_151_489, "fmnist_2c2d": 3_274_634,
                               "cifar10_3c3d": 895_210, "cifar100_allcnnc": 1_387_108, "svhn_wrn164": 2_748_890,
                               "tolstoi_char_rnn": 284_499}


# ----------------------------------------------------------------------------------------- TF 'same' padding
def ref_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TF's rule (tensorflow/core/framework/kernel_shape_util.cc), written out independently."""
    out = (n + s - 1) // s
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def np_conv_same(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Naive TF conv2d 'same' (cross-correlation), NCHW input, torch (out, in, kh, kw) weight."""
    k = w.shape[2]
    (t, b), (l, r) = ref_pads(x.shape[2], k, stride), ref_pads(x.shape[3], k, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    oh, ow = -(-x.shape[2] // stride), -(-x.shape[3] // stride)
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out


def np_maxpool_same(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    (t, b), (l, r) = ref_pads(x.shape[2], k, stride), ref_pads(x.shape[3], k, stride)
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=-np.inf)
    oh, ow = -(-x.shape[2] // stride), -(-x.shape[3] // stride)
    out = np.empty((x.shape[0], x.shape[1], oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * stride:i * stride + k, j * stride:j * stride + k].max(axis=(2, 3))
    return out


def test_tf_same_pads_bottom_right_heavy() -> None:
    # (size, kernel, stride) → (before, after), from TF's rule by hand
    table = {(32, 3, 2): (0, 1), (16, 3, 2): (0, 1), (28, 3, 2): (0, 1), (12, 3, 2): (0, 1), (6, 3, 2): (0, 1),
             (7, 4, 1): (1, 2), (14, 4, 1): (1, 2), (28, 4, 2): (1, 1), (14, 4, 2): (1, 1), (28, 5, 1): (2, 2),
             (28, 2, 2): (0, 0), (32, 1, 2): (0, 0), (32, 3, 1): (1, 1)}
    for (n, k, s), pads in table.items():
        assert tf_same_pads(n, k, s) == pads == ref_pads(n, k, s), (n, k, s)


@pytest.mark.parametrize("size,kernel,stride", [(32, 3, 2), (7, 4, 1), (9, 4, 2), (10, 5, 1), (11, 3, 2)])
def test_conv_same_matches_numpy_reference(size: int, kernel: int, stride: int) -> None:
    torch.manual_seed(0)
    layer = Conv2d(2, 3, kernel, stride, "same")
    x = torch.randn(2, 2, size, size + 1, dtype=torch.float64)
    layer = layer.double()
    expected = np_conv_same(x.numpy(), layer.weight.detach().numpy(), stride) + layer.bias.detach().numpy()[:, None,
                                                                                                          None]
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_symmetric_torch_padding_would_differ() -> None:
    """Why the asymmetry matters: for 3×3/2 on 32×32 torch's padding=1 samples a different grid."""
    torch.manual_seed(0)
    layer = Conv2d(2, 3, 3, 2, "same")
    x = torch.randn(1, 2, 32, 32)
    sym = torch.nn.functional.conv2d(x, layer.weight, layer.bias, 2, padding=1)
    assert sym.shape == layer(x).shape
    assert not torch.allclose(sym, layer(x))


@pytest.mark.parametrize("size,kernel,stride", [(28, 3, 2), (12, 3, 2), (6, 3, 2), (28, 2, 2), (7, 2, 2)])
def test_maxpool_same_matches_numpy_reference(size: int, kernel: int, stride: int) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)) - 5.0  # padding must never win
    expected = np_maxpool_same(x.numpy().astype(np.float64), kernel, stride)
    np.testing.assert_allclose(MaxPool2d(kernel, stride)(x).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("size,kernel,stride", [(7, 4, 2), (14, 4, 1), (7, 4, 1), (5, 3, 2)])
def test_conv_transpose_same_is_the_adjoint_of_conv_same(size: int, kernel: int, stride: int) -> None:
    """TF's conv2d_transpose is the gradient of a 'same' conv from the output size: ⟨conv(u), v⟩ = ⟨u, convT(v)⟩."""
    torch.manual_seed(0)
    layer = ConvTranspose2d(3, 2, kernel, stride, bias=False).double()
    v = torch.randn(2, 3, size, size, dtype=torch.float64)
    out = layer(v)
    assert out.shape == (2, 2, size * stride, size * stride)
    u = np.random.RandomState(0).randn(2, 2, size * stride, size * stride)
    forward = np_conv_same(u, layer.weight.detach().numpy(), stride)  # (out=3, in=2) weight: u (2 ch) → v (3 ch)
    assert forward.shape == v.shape
    np.testing.assert_allclose((forward * v.numpy()).sum(), (u * out.detach().numpy()).sum(), rtol=1e-10)


# --------------------------------------------------------------------------------------------------- shapes
def spatial_trace(model: nn.Module, x: torch.Tensor, kinds: tuple[type, ...]) -> list[int]:
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return sizes


def test_layer_shapes() -> None:
    _, net = build("cifar10_3c3d")
    assert spatial_trace(net, torch.randn(1, 3, 32, 32), (nn.Conv2d, MaxPool2d)) == [28, 14, 12, 6, 6, 3]
    _, net = build("fmnist_2c2d")
    assert spatial_trace(net, torch.rand(1, 1, 28, 28), (nn.Conv2d, MaxPool2d)) == [28, 14, 14, 7]
    _, net = build("cifar100_allcnnc")
    assert spatial_trace(net, torch.randn(1, 3, 32, 32), (nn.Conv2d,)) == [32, 32, 16, 16, 16, 8, 6, 6, 6]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    _, net = build("svhn_wrn164")
    units = [m for m in net.modules() if type(m).__name__ == "Unit"]
    sizes: list[tuple[int, int]] = []
    for u in units:
        u.register_forward_hook(lambda m, i, o: sizes.append((o.shape[1], o.shape[-1])))
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert sizes == [(64, 32), (64, 32), (128, 16), (128, 16), (256, 8), (256, 8)]
    _, vae = build("mnist_vae")
    enc = spatial_trace(vae, torch.rand(1, 1, 28, 28), (Conv2d, ConvTranspose2d))
    assert enc == [14, 7, 7, 14, 14, 14]
    img, mean, std_dev = vae(torch.rand(3, 1, 28, 28))
    assert img.shape == (3, 784) and mean.shape == std_dev.shape == (3, 8)


# ---------------------------------------------------------------------------------------------- initialisers
def glorot_limit(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def assert_uniform(w: torch.Tensor, limit: float, tol: float = 0.03) -> None:
    n = w.numel()  # the largest of n draws of U(−l, l) falls below l·(1 − 5/n) with probability ≈ e^(−5)
    assert w.abs().max() <= limit and w.abs().max() > (1.0 - min(0.5, 5.0 / n)) * limit
    assert abs(w.std().item() / (limit / math.sqrt(3)) - 1) < tol


def assert_truncated(w: torch.Tensor, sigma: float, tol: float = 0.03) -> None:
    """N(0, σ²) cut at ±2σ: bounded by 2σ, kept std σ·0.8796."""
    assert w.abs().max() <= 2 * sigma and w.abs().max() > 1.9 * sigma
    assert abs(w.std().item() / (sigma * TRUNC_STD) - 1) < tol


def test_initialisers_2c2d_and_3c3d() -> None:
    _, net = build("fmnist_2c2d")
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in layers:
        assert torch.all(m.bias == 0.05)
        assert_truncated(m.weight, 0.05, tol=0.1 if m.weight.numel() < 5000 else 0.02)
    _, net = build("cifar10_3c3d")
    for m in net:
        if isinstance(m, nn.Conv2d):  # Keras glorot_normal: σ = sqrt(2/(fan_in+fan_out)) / 0.8796
            k, c_in, c_out = m.kernel_size[0], m.in_channels, m.out_channels
            sigma = math.sqrt(2.0 / (k * k * c_in + k * k * c_out)) / TRUNC_STD
            assert_truncated(m.weight, sigma, tol=0.05)
            assert abs(m.weight.std().item() / math.sqrt(2.0 / (k * k * (c_in + c_out))) - 1) < 0.05
            assert torch.all(m.bias == 0)
        elif isinstance(m, nn.Linear):
            assert_uniform(m.weight, glorot_limit(m.in_features, m.out_features), tol=0.05)
            assert torch.all(m.bias == 0)


def test_initialisers_allcnnc_wrn_vae() -> None:
    _, net = build("cifar100_allcnnc")
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9
    for m in convs:
        assert torch.all(m.bias == 0.1)
        k = m.kernel_size[0]
        assert m.weight.abs().max() <= 2 * math.sqrt(2.0 / (k * k * (m.in_channels + m.out_channels))) / TRUNC_STD
    big = convs[4].weight  # 192→192 3×3
    assert abs(big.std().item() / math.sqrt(2.0 / (9 * 384)) - 1) < 0.02
    _, net = build("svhn_wrn164")
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
            k = m.kernel_size[0]
            assert m.weight.abs().max() <= glorot_limit(k * k * m.in_channels, k * k * m.out_channels)
        elif isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert m.eps == 1e-5 and m.momentum == pytest.approx(0.1)  # TF momentum 0.9
    assert_uniform(net.units[-1].conv2.weight, glorot_limit(9 * 256, 9 * 256), tol=0.02)
    assert_uniform(net.dense.weight, glorot_limit(256, 10), tol=0.2)
    assert torch.all(net.dense.bias == 0)
    _, vae = build("mnist_vae")
    for m in vae.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            assert torch.all(m.bias == 0)
    assert_uniform(vae.output.weight, glorot_limit(12544, 784), tol=0.01)
    assert_uniform(vae.decoder_convs[1].weight, glorot_limit(16 * 64, 16 * 64), tol=0.02)


def test_initialisers_char_rnn() -> None:
    _, net = build("tolstoi_char_rnn")
    assert_uniform(net.embedding, glorot_limit(83, 128), tol=0.03)
    assert net.softmax_w.shape == (83, 128)  # TF's [128, 83] transposed, rows = output units as nn.Linear
    assert_uniform(net.softmax_w, glorot_limit(128, 83), tol=0.03)
    assert_uniform(net.softmax_b, glorot_limit(83, 83), tol=0.3)  # 1-D get_variable: fan_in = fan_out = 83
    for cell in net.cells:
        assert cell.kernel.shape == (512, 256)
        assert_uniform(cell.kernel, glorot_limit(128 + 128, 4 * 128), tol=0.02)
        assert torch.all(cell.bias == 0)
        expected = torch.zeros(512)
        expected[128:256] = 1.0  # torch gate order i, f, g, o: the forget rows
        assert torch.equal(cell.forget_bias, expected)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert not any("forget_bias" in n for n in trainable)
    assert len(list(net.parameters())) == len(trainable) == 7


# ----------------------------------------------------------------------------------------- LSTM reference
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def np_tf_lstm(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, h: np.ndarray, c: np.ndarray,
               forget_bias: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF LSTMCell over time: z = [x, h]·K + b; c = σ(f + forget_bias)·c + σ(i)·tanh(g); h = σ(o)·tanh(c)."""
    hidden = h.shape[1]
    outs = []
    for t in range(x.shape[1]):
        z = np.concatenate([x[:, t], h], axis=1) @ kernel.T + bias
        i, f, g, o = (z[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), h, c


def test_tf_lstm_layer_matches_numpy_cell() -> None:
    torch.manual_seed(0)
    layer = TFLSTMLayer(3, 4).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    out, (h, c) = layer(x, (h0, c0))
    ref_out, ref_h, ref_c = np_tf_lstm(x.numpy(), layer.kernel.detach().numpy(), layer.bias.detach().numpy(),
                                       h0.numpy(), c0.numpy())
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.detach().numpy(), ref_h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.detach().numpy(), ref_c, rtol=1e-10, atol=1e-12)
    out.sum().backward()
    assert layer.kernel.grad is not None and layer.bias.grad is not None and layer.forget_bias.grad is None
    zero_out, _ = layer(x)  # no state → zeros
    ref_zero, _, _ = np_tf_lstm(x.numpy(), layer.kernel.detach().numpy(), layer.bias.detach().numpy(),
                                np.zeros((2, 4)), np.zeros((2, 4)))
    np.testing.assert_allclose(zero_out.detach().numpy(), ref_zero, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", ["fmnist_2c2d", "cifar10_3c3d", "cifar100_allcnnc", "svhn_wrn164"])
def test_classifier_loss_at_init_is_near_log_classes(name: str) -> None:
    problem, net = build(name, weight_decay=0.0)
    x, y = images(name, 16)
    with torch.no_grad():
        loss, acc = problem.compute(net.eval(), (x, y), training=False)
    assert abs(loss.item() - math.log(NUM_CLASSES[name])) < 0.4
    assert 0.0 <= acc.item() <= 1.0
    logits = net(x)
    assert acc.item() == pytest.approx((logits.argmax(1) == y).float().mean().item())
    ref = -torch.log_softmax(logits.double(), 1)[torch.arange(16), y].mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_char_rnn_loss_at_init_is_near_log_vocab() -> None:
    problem, net = build("tolstoi_char_rnn")
    x, y = chars(8)
    with torch.no_grad():
        loss, acc = problem.compute(net.eval(), (x, y), training=False)
        logits, _ = net(x)
    assert abs(loss.item() - math.log(83)) < 0.05
    # per-sequence mean over time, then batch mean = mean over all 8·50 characters
    nll = -torch.log_softmax(logits.double(), -1).gather(-1, y[..., None])[..., 0]
    assert loss.item() == pytest.approx(nll.mean(1).mean().item(), rel=1e-6)
    assert acc.item() == pytest.approx((logits.argmax(-1) == y).double().mean().item())


def test_vae_loss_matches_reference_formula_and_init_scale() -> None:
    problem, vae = build("mnist_vae")
    vae.eval()
    x = torch.zeros(16, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # MNIST-like: black with a white blob; |x − 0.5|² = 0.25 everywhere
    with torch.no_grad():
        torch.manual_seed(5)
        loss, acc = problem.compute(vae, (x,), training=False)
        torch.manual_seed(5)
        img, mean, std_dev = (t.double().numpy() for t in vae(x))
    assert acc is None and not problem.has_accuracy
    sse = ((img - x.reshape(16, -1).numpy()) ** 2).sum(1)
    kl = -0.5 * (1 + 2 * std_dev - mean ** 2 - np.exp(2 * std_dev)).sum(1)
    assert loss.item() == pytest.approx((sse + kl).mean(), rel=1e-5)
    assert abs(loss.item() - 784 * 0.25) < 5  # sigmoid outputs ≈ 0.5 at init: SSE ≈ 784·0.25
    assert 0 < kl.mean() < 1


@pytest.mark.parametrize("name,n_kernels", [("cifar10_3c3d", 6), ("cifar100_allcnnc", 9), ("svhn_wrn164", 17)])
def test_l2_on_kernels_only(name: str, n_kernels: int) -> None:
    wd = SPEC_TABLE[name][2]
    problem, net = build(name)
    plain = make(name, weight_decay=0.0)
    x, y = images(name, 2, side=16 if name != "cifar10_3c3d" else 32)
    net.eval()
    kernels = [p for n, p in net.named_parameters() if p.ndim >= 2]  # conv/dense kernels; biases and BN are 1-D
    assert len(kernels) == n_kernels
    expected = 0.5 * wd * sum(float((p.detach().double() ** 2).sum()) for p in kernels)
    with torch.no_grad():
        with_l2 = problem.compute(net, (x, y), training=False)[0].item()
        without = plain.compute(net, (x, y), training=False)[0].item()
    assert with_l2 - without == pytest.approx(expected, rel=1e-4)
    assert expected > 0.01


# --------------------------------------------------------------------------------------- train/eval behaviour
def test_dropout_only_in_training() -> None:
    _, net = build("cifar100_allcnnc")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), net(x))
        assert not torch.equal(net.train()(x), net(x))
    _, net = build("fmnist_2c2d")  # no dropout at all
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(net.train()(x), net.eval()(x))
    problem, rnn = build("tolstoi_char_rnn")
    xc, _ = chars(2)
    with torch.no_grad():
        assert torch.equal(rnn.eval()(xc)[0], rnn(xc)[0])
        assert not torch.equal(rnn.train()(xc)[0], rnn(xc)[0])
    _, vae = build("mnist_vae")
    xv = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(vae.eval().encode(xv), vae.encode(xv)))
        assert not torch.equal(vae(xv)[0], vae(xv)[0])  # ε is drawn at evaluation too
        torch.manual_seed(1)
        first = vae(xv)[0]
        torch.manual_seed(1)
        assert torch.equal(first, vae(xv)[0])
        assert not torch.equal(vae.train().encode(xv)[0], vae.encode(xv)[0])


def test_batch_norm_statistics_update_in_training_only() -> None:
    _, net = build("svhn_wrn164")
    bn = net.units[0].bn1
    x = torch.randn(4, 3, 8, 8) * 3 + 1
    with torch.no_grad():
        net.eval()(x)
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
        net.train()(x)
    first = net.conv(x)
    expected_mean = 0.1 * first.mean(dim=(0, 2, 3))  # running ← 0.9·running + 0.1·batch (TF momentum 0.9)
    expected_var = 0.9 + 0.1 * first.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(bn.running_mean, expected_mean.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bn.running_var, expected_var.detach(), rtol=1e-4, atol=1e-6)


def test_lstm_state_is_carried_per_batch_and_reset() -> None:
    problem, rnn = build("tolstoi_char_rnn", batch_size=3)
    rnn.eval()
    b1, b2 = chars(3, seed=1), chars(3, seed=2)
    with torch.no_grad():
        first = problem.compute(rnn, b1, False)[0]
        assert torch.equal(problem.compute(rnn, b1, False)[0], first)  # same batch again: same entering state
        carried = problem.compute(rnn, b2, False)[0]
        problem.reset_state()
        fresh = problem.compute(rnn, b2, False)[0]
        problem.reset_state()
        assert torch.equal(problem.compute(rnn, b1, False)[0], first)
        problem.sampled_loss(rnn, b2)  # a sampled loss does not advance the state
        assert torch.equal(problem.compute(rnn, b2, False)[0], carried)
    assert not torch.equal(carried, fresh)
    # the carried state is the final state of the previous batch, detached
    with torch.no_grad():
        _, state = rnn(b1[0])
    assert all(torch.equal(a, b) for (a, b) in zip(problem._state_in[0], state[0]))
    assert not any(t.requires_grad for s in problem._state_out for t in s)


def test_char_batches_match_deepobs_numpy_split() -> None:
    ids = np.random.RandomState(0).randint(0, 83, size=1234)
    b, t = 4, 7
    nb = (ids.size - 1) // (b * t)
    x_ref = np.array(np.split(ids[:nb * b * t].reshape(b, -1), nb, 1))
    y_ref = np.array(np.split(ids[1:nb * b * t + 1].reshape(b, -1), nb, 1))
    x, y = char_batches(torch.from_numpy(ids), b, t)
    assert x.shape == (nb, b, t) == x_ref.shape
    np.testing.assert_array_equal(x.numpy(), x_ref)
    np.testing.assert_array_equal(y.numpy(), y_ref)
    assert torch.equal(x[1][:, 1:], y[1][:, :-1]) and torch.equal(x[1][:, 0], y[0][:, -1])  # streams continue


def test_tolstoi_batches_and_train_eval_count() -> None:
    problem = make("tolstoi_char_rnn")
    from problems.base import Split

    n_batches = 300
    ids = torch.arange(n_batches * 2500 + 1) % 83
    x, y = char_batches(ids, 50, 50)
    problem.data = {"train": Split(x, y), "valid": Split(x[:3], y[:3]), "test": Split(x[:2], y[:2])}
    assert problem.steps_per_epoch() == n_batches
    train = list(problem.train_batches(0))
    assert len(train) == n_batches and torch.equal(train[5][0], x[5])
    assert torch.equal(list(problem.train_batches(1))[5][0], x[5])  # never shuffled
    assert len(list(problem.eval_batches("train"))) == 653_237 // 2500 == 261
    assert len(list(problem.eval_batches("valid"))) == 3 and len(list(problem.eval_batches("test"))) == 2
    assert problem.eval_batch_size() == 50


# --------------------------------------------------------------------------------------------- sampled loss
def test_categorical_draws_follow_the_softmax() -> None:
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0], [3.0, 0.0, 0.0, -2.0]])
    torch.manual_seed(0)
    draws = sample_categorical(logits.repeat(20_000, 1)).reshape(20_000, 2)
    freq = torch.stack([torch.bincount(draws[:, i], minlength=4) for i in range(2)]).double() / 20_000
    torch.testing.assert_close(freq, torch.softmax(logits.double(), 1), atol=0.012, rtol=0)


def test_sampled_loss_expectations() -> None:
    """Classifier: E[CE of a label drawn from softmax] = entropy. VAE: E[Σ(img − y)²] with y ~ N(img, ½) = 392."""
    problem, net = build("fmnist_2c2d")
    x, _ = images("fmnist_2c2d", 32)
    net.eval()
    with torch.no_grad():
        p = torch.softmax(net(x).double(), 1)
        entropy = -(p * p.log()).sum(1).mean().item()
        torch.manual_seed(0)
        draws = torch.stack([problem.sampled_loss(net, (x,)) for _ in range(20)])
    assert draws.mean().item() == pytest.approx(entropy, abs=0.06)
    assert draws.std().item() > 0
    problem, vae = build("mnist_vae")
    xv = torch.rand(16, 1, 28, 28)
    torch.manual_seed(0)
    loss = problem.sampled_loss(vae.eval(), (xv,))
    assert abs(loss.item() - 784 * 0.5) < 4 * math.sqrt(784 * 2 * 0.25 / 16)
    loss.backward()
    assert vae.output.weight.grad is not None


# --------------------------------------------------------------------------------------------- training
def fixed_batch(name: str) -> tuple[torch.Tensor, ...]:
    if name == "tolstoi_char_rnn":
        return chars(4)
    x, y = images(name, 8, side=None if name in ("cifar10_3c3d",) else 16)
    return (x,) if "vae" in name else (x, y)


@pytest.mark.parametrize("name", NAMES)
def test_adam_steps_reduce_the_training_loss(name: str) -> None:
    """Same batch, same dropout masks / ε (re-seeded): the training-mode loss falls after a few Adam steps."""
    from optimizers.adam import TFAdam

    problem, net = build(name)
    net.train()
    batch = fixed_batch(name)

    def measured() -> float:
        problem.reset_state()
        torch.manual_seed(123)
        with torch.no_grad():
            return problem.compute(net, batch, training=True)[0].item()

    before = measured()
    opt = TFAdam(net.parameters(), lr=1e-3)
    for _ in range(5):
        problem.reset_state()
        opt.zero_grad()
        problem.compute(net, batch, training=True)[0].backward()
        opt.step()
    assert measured() < before


# -------------------------------------------------------------------------------------------- smoke data


@pytest.mark.parametrize("name", NAMES)
def test_smoke_data_pipeline_and_training(name: str, tmp_path: Path) -> None:
    """The real load → device → transform → batches path on the generated smoke files, then a few Adam steps."""
    from optimizers.adam import TFAdam

    bs = 8 if name != "tolstoi_char_rnn" else 50
    problem = make(name, size="smoke", batch_size=bs)
    problem.data_dir = tmp_path
    problem.load_data()
    assert {"train", "valid", "test"} <= set(problem.data)
    torch.manual_seed(0)
    net = problem.build_model().train()
    batches = iter(problem.train_batches(0))
    first = next(batches)
    if name == "tolstoi_char_rnn":
        assert first[0].shape == (50, 50) and first[0].dtype == torch.int64
    else:
        assert first[0].dtype == torch.float32 and first[0].shape[0] == bs
        assert len(list(problem.eval_batches("valid"))) >= 1
    opt = TFAdam(net.parameters(), lr=1e-3)

    def measured() -> float:
        problem.reset_state()
        torch.manual_seed(7)
        with torch.no_grad():
            return problem.compute(net, first, training=True)[0].item()

    before = measured()
    for _ in range(4):
        problem.reset_state()
        opt.zero_grad()
        problem.compute(net, first, training=True)[0].backward()
        opt.step()
    assert measured() < before


@pytest.mark.parametrize("name", ["fmnist_2c2d", "tolstoi_char_rnn"])
def test_smoke_run_end_to_end(name: str, tmp_path: Path) -> None:
    """bench.train on smoke data: N+1 evaluations, finite curves, accuracy present, the training loss goes down."""
    from bench.train import train

    settings = {**yaml_settings(name), "size": "smoke", "num_epochs": 1 if name == "fmnist_2c2d" else 2}
    if name != "tolstoi_char_rnn":
        settings["batch_size"] = 32
    spec = make_spec(name, "adam", adam_hp(), problem_settings=settings, seed=1)
    result = train(spec, data_dir=tmp_path)
    assert result.status == "completed"
    losses = result.series("train", "loss")
    assert len(losses) == spec.num_epochs + 1 and all(math.isfinite(v) for v in losses)
    assert len(result.series("test", "accuracy")) == spec.num_epochs + 1
    assert losses[-1] < losses[0]
    assert result.num_parameters == EXPECTED_PARAMS[name]
