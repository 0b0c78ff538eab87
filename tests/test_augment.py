"""The DeepOBS/TF image pipeline: each op against an independent numpy formula (saturation against a line-by-line
port of TF's AdjustSaturation kernel), plus property tests of crop, flip, standardisation and determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from problems.datasets import augment

SETTINGS = settings(max_examples=25, deadline=None)


def _images(seed: int, b: int, low: int = 0, high: int = 256) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(low, high, size=(b, 3, 32, 32), dtype=np.uint8))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -------------------------------------------------------------------------------------------------------- crop/flip
@SETTINGS
@given(seed=st.integers(0, 2**31), b=st.integers(1, 16))
def test_crop_windows_come_from_padded_input_at_one_offset(seed: int, b: int) -> None:
    x = _images(seed, b, low=1)  # no zeros, so padding pixels are recognisable
    out = augment.pad_and_crop(x, _gen(seed))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(b):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(out[i].numpy(), padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1


def test_crop_offsets_cover_all_25_positions() -> None:
    x = _images(0, 400, low=1)
    out = augment.pad_and_crop(x, _gen(1)).numpy()
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)))
    seen = set()
    for i in range(len(x)):
        seen |= {(dy, dx) for dy in range(5) for dx in range(5)
                 if np.array_equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])}
    assert seen == {(dy, dx) for dy in range(5) for dx in range(5)}


def test_crop_with_given_offsets_is_slicing() -> None:
    x = torch.arange(2 * 3 * 8 * 8).view(2, 3, 8, 8)
    out = augment.crop(x, torch.tensor([0, 3]), torch.tensor([2, 1]), 5)
    assert torch.equal(out[0], x[0, :, 0:5, 2:7]) and torch.equal(out[1], x[1, :, 3:8, 1:6])


@SETTINGS
@given(seed=st.integers(0, 2**31), b=st.integers(1, 12))
def test_flip_is_an_involution_and_a_mirror(seed: int, b: int) -> None:
    x = _images(seed, b)
    mask = torch.from_numpy(np.random.default_rng(seed + 1).random(b) < 0.5)
    once = augment.flip_lr(x, mask)
    assert torch.equal(augment.flip_lr(once, mask), x)
    expected = np.where(mask.numpy()[:, None, None, None], x.numpy()[..., ::-1], x.numpy())
    assert np.array_equal(once.numpy(), expected)
    random = augment.random_flip_lr(x, _gen(seed))
    for i in range(b):
        assert torch.equal(random[i], x[i]) or torch.equal(random[i], x[i].flip(-1))


# ------------------------------------------------------------------------------------------------ standardisation
@SETTINGS
@given(seed=st.integers(0, 2**31), scale=st.floats(1e-3, 300.0))
def test_standardisation_matches_formula(seed: int, scale: float) -> None:
    x = np.random.default_rng(seed).normal(100.0, scale, size=(4, 3, 32, 32))
    out = augment.per_image_standardization(torch.from_numpy(x).float()).double().numpy()
    n = 3 * 32 * 32
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    expected = (x - mean) / np.maximum(std, 1.0 / np.sqrt(n))
    np.testing.assert_allclose(out, expected, atol=2e-3 * max(1.0, 1.0 / (scale * np.sqrt(n))), rtol=1e-3)
    if scale > 1.0 / np.sqrt(n) * 10:
        np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
        np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, atol=1e-4)


def test_standardisation_floor_for_constant_images() -> None:
    x = torch.full((2, 3, 32, 32), 77.0)
    assert torch.equal(augment.per_image_standardization(x), torch.zeros_like(x))
    y = x.clone()
    y[:, 0, 0, 0] += 0.01  # std ≈ 0.01/sqrt(N) < 1/sqrt(N): divided by the floor, i.e. multiplied by sqrt(N)
    n = 3 * 32 * 32
    out = augment.per_image_standardization(y)
    expected = (y - y.mean(dim=(1, 2, 3), keepdim=True)) * np.sqrt(n)
    torch.testing.assert_close(out, expected, atol=1e-3, rtol=1e-3)


# ------------------------------------------------------------------------------------------------ colour adjustments
def _tf_adjust_saturation(img: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Line-by-line numpy port of TF's AdjustSaturation CPU kernel (rgb_to_hsv, s *= scale, clip, hsv_to_rgb).

    ``img``: (B, 3, H, W) float64; ``scale``: (B,). Vectorised over pixels, same branches as the C++ code.
    """
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    scale = scale[:, None, None]
    vv = np.maximum(r, np.maximum(g, b))
    rng = vv - np.minimum(r, np.minimum(g, b))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(vv > 0, rng / vv, 0.0)
        norm = 1.0 / (6.0 * rng)
        hh = np.where(r == vv, norm * (g - b), np.where(g == vv, norm * (b - r) + 2.0 / 6.0, norm * (r - g) + 4.0 / 6.0))
    hh = np.where(rng <= 0.0, 0.0, hh)
    hh = np.where(hh < 0.0, hh + 1.0, hh)
    s = np.minimum(1.0, np.maximum(0.0, s * scale))
    c = s * vv
    m = vv - c
    dh = hh * 6.0
    category = dh.astype(np.int64)  # static_cast<int>
    fmodu = dh - 2.0 * (np.ceil(dh / 2.0) - 1.0)  # the two while loops: fmodu in (0, 2], fmodu ≡ dh (mod 2)
    x = c * (1.0 - np.abs(fmodu - 1.0))
    zero = np.zeros_like(c)
    table = {0: (c, x, zero), 1: (x, c, zero), 2: (zero, c, x), 3: (zero, x, c), 4: (x, zero, c), 5: (c, zero, x)}
    out = []
    for channel in range(3):
        out.append(np.select([category == k for k in table], [table[k][channel] for k in table], 0.0) + m)
    return np.stack(out, axis=1)


@SETTINGS
@given(seed=st.integers(0, 2**31))
def test_saturation_equals_tf_hsv_kernel(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 255.0, size=(6, 3, 8, 8))
    x[:, :, 0, :] = x[:, :1, 0, :]  # gray pixels (range 0)
    x[:, :, 1, :4] = -rng.uniform(0.0, 0.3, size=(6, 3, 4))  # all-negative pixels (v <= 0) as brightness can make
    x[:, 1, 2, :] = x[:, 0, 2, :]  # ties between max channels
    factor = rng.uniform(0.0, 2.0, size=6)
    ours = augment.adjust_saturation(torch.from_numpy(x).float(), torch.from_numpy(factor).float()).double().numpy()
    np.testing.assert_allclose(ours, _tf_adjust_saturation(x, factor), atol=2e-3, rtol=1e-4)


def test_saturation_one_is_identity_and_zero_is_gray() -> None:
    x = _images(3, 4).float()
    torch.testing.assert_close(augment.adjust_saturation(x, torch.ones(4)), x, atol=1e-3, rtol=1e-5)
    gray = augment.adjust_saturation(x, torch.zeros(4))
    torch.testing.assert_close(gray, x.amax(dim=1, keepdim=True).expand_as(x))  # s = 0: every channel = value


def test_contrast_formula_and_identity() -> None:
    x = _images(4, 3).double()
    factor = torch.tensor([0.2, 1.0, 1.8], dtype=torch.float64)
    out = augment.adjust_contrast(x, factor).numpy()
    xn = x.numpy()
    mean = xn.mean(axis=(2, 3), keepdims=True)  # per image and channel
    np.testing.assert_allclose(out, (xn - mean) * factor.numpy()[:, None, None, None] + mean, rtol=1e-12)
    np.testing.assert_allclose(out[1], xn[1], rtol=1e-12)


def test_brightness_adds_one_delta_per_image() -> None:
    x = _images(5, 64).float()
    out = augment.random_brightness(x, _gen(0))
    delta = (out - x).flatten(1)
    assert torch.allclose(delta, delta[:, :1].expand_as(delta), atol=1e-4)
    assert delta.abs().max() <= 63.0 / 255.0 + 1e-6 and delta[:, 0].std() > 0.05


# ------------------------------------------------------------------------------------------------------- pipeline
def test_pipeline_is_deterministic_given_the_generator() -> None:
    x = _images(6, 32)
    a = augment.image_pipeline(x, _gen(9), augment=True, flip=True)
    b = augment.image_pipeline(x, _gen(9), augment=True, flip=True)
    c = augment.image_pipeline(x, _gen(10), augment=True, flip=True)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (32, 3, 32, 32)
    torch.testing.assert_close(a.mean(dim=(1, 2, 3)), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.std(dim=(1, 2, 3), unbiased=False), torch.ones(32), atol=1e-4, rtol=0)


def test_pipeline_order_and_draws() -> None:
    """crop → flip → brightness → saturation → contrast → standardisation, drawing in that order."""
    x = _images(7, 16)
    g = _gen(3)
    step = augment.pad_and_crop(x, g)
    step = augment.random_flip_lr(step, g).float()
    step = augment.random_contrast(augment.random_saturation(augment.random_brightness(step, g), g), g)
    torch.testing.assert_close(augment.image_pipeline(x, _gen(3), augment=True, flip=True),
                               augment.per_image_standardization(step))


def test_eval_pipeline_only_standardises_and_draws_nothing() -> None:
    x = _images(8, 8)
    g = _gen(4)
    state = g.get_state()
    out = augment.image_pipeline(x, g, augment=False, flip=True)
    assert torch.equal(g.get_state(), state)
    torch.testing.assert_close(out, augment.per_image_standardization(x.float()))


def test_svhn_pipeline_skips_the_flip_and_its_draws() -> None:
    x = _images(11, 64)
    g = _gen(5)
    step = augment.pad_and_crop(x, g).float()
    step = augment.random_contrast(augment.random_saturation(augment.random_brightness(step, g), g), g)
    torch.testing.assert_close(augment.image_pipeline(x, _gen(5), augment=True, flip=False),
                               augment.per_image_standardization(step))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_pipeline_runs_on_the_data_device() -> None:
    x = _images(12, 8).cuda()
    out = augment.image_pipeline(x, torch.Generator(device="cuda").manual_seed(0), augment=True, flip=True)
    assert out.is_cuda and out.shape == x.shape
