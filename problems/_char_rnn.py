"""The DeepOBS char-RNN model (§1 P8): embedding → 2 × TF ``LSTMCell(128)`` with DropoutWrapper → softmax layer.

Why not ``nn.LSTM``: TF's ``LSTMCell`` has ONE kernel [input + hidden, 4·hidden] and ONE bias per layer, with the
constant ``forget_bias=1.0`` added inside the cell. ``nn.LSTM`` has two weights and two biases; emulating TF with it
needs a frozen ``bias_hh`` parameter (a non-trainable entry in ``model.parameters()`` every optimizer must skip) and
splits TF's kernel in two tensors, which changes per-tensor or per-unit norms (LARS/LAMB trust ratios, ND-Adam's
per-unit vectors). :class:`TFLSTMLayer` keeps TF's parameter tensors (kernel stored torch-style as (4h, in + h), rows
= units as for ``nn.Linear``, so row-wise rules such as ND-Adam's see TF's per-unit vectors over [x, h]) and the
forget bias as a buffer, and runs the fused ATen/cuDNN LSTM
(``torch.lstm``) on views of them — the same function and gradients as TF, at cuDNN speed.

Gate order differs (TF i, j, f, o; torch i, f, g, o), a fixed permutation of the kernel's rows that an i.i.d.
initialiser cannot see; the forget bias sits on torch's forget rows [h, 2h).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from problems._layers import glorot_uniform_

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (batch, hidden)

# On CUDA, cuDNN copies weights that are not one flat buffer into one on every call and warns about it. Here that is
# by design (TF's kernel is split into views per call) and costs one 0.5 MB copy per layer and batch.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk of memory")


class TFLSTMLayer(nn.Module):
    """``tf.contrib.rnn.LSTMCell(hidden)`` (no peepholes, no projection, no clipping) unrolled over a sequence."""

    def __init__(self, input_size: int, hidden: int, forget_bias: float = 1.0) -> None:
        super().__init__()
        self.input_size, self.hidden = input_size, hidden
        self.kernel = nn.Parameter(torch.empty(4 * hidden, input_size + hidden))
        self.bias = nn.Parameter(torch.zeros(4 * hidden))
        constant = torch.zeros(4 * hidden)
        constant[hidden:2 * hidden] = forget_bias
        self.register_buffer("forget_bias", constant)
        # TF get_variable default on the [in + h, 4h] kernel: glorot_uniform with fan_in = in + h, fan_out = 4h.
        glorot_uniform_(self.kernel, input_size + hidden, 4 * hidden)

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """x (batch, time, input) → outputs (batch, time, hidden) and the final (h, c)."""
        if state is None:
            zeros = x.new_zeros(1, x.shape[0], self.hidden)
            hx = (zeros, zeros)
        else:
            hx = (state[0].unsqueeze(0), state[1].unsqueeze(0))
        weights = [self.kernel[:, :self.input_size].contiguous(), self.kernel[:, self.input_size:].contiguous(),
                   self.bias, self.forget_bias]
        train = self.training or torch.is_grad_enabled()  # cuDNN keeps its backward workspace only if asked
        out, h, c = torch.lstm(x.contiguous(), hx, weights, True, 1, 0.0, train, False, True)
        return out, (h[0], c[0])


class CharRNN(nn.Module):
    """DeepOBS ``tolstoi_char_rnn`` network: every cell wrapped in DropoutWrapper(input_keep, output_keep).

    DropoutWrapper draws a fresh mask per time step and element on the cell's input and output (not its state), so
    dropout on the whole (batch, time, features) sequence is the same operation; between the two layers the
    output dropout of layer 1 and the input dropout of layer 2 both apply, as in TF's MultiRNNCell of wrapped cells.
    """

    def __init__(self, vocab_size: int = 83, hidden: int = 128, num_layers: int = 2, keep_prob: float = 0.8) -> None:
        super().__init__()
        self.drop = 1.0 - keep_prob
        # All three are tf.get_variable with the default glorot_uniform, the 1-D bias with fan_in = fan_out = 83.
        # softmax_w is TF's [hidden, vocab] stored transposed, (vocab, hidden) like nn.Linear (rows = output units).
        self.embedding = nn.Parameter(glorot_uniform_(torch.empty(vocab_size, hidden), vocab_size, hidden))
        self.cells = nn.ModuleList([TFLSTMLayer(hidden, hidden) for _ in range(num_layers)])
        self.softmax_w = nn.Parameter(glorot_uniform_(torch.empty(vocab_size, hidden), hidden, vocab_size))
        self.softmax_b = nn.Parameter(glorot_uniform_(torch.empty(vocab_size), vocab_size, vocab_size))

    def forward(self, x: Tensor, state: tuple[LSTMState, ...] | None = None
                ) -> tuple[Tensor, tuple[LSTMState, ...]]:
        """Char ids (batch, time) → logits (batch, time, vocab) and the new state of every layer."""
        h = F.embedding(x, self.embedding)
        new_state = []
        for i, cell in enumerate(self.cells):
            h = F.dropout(h, self.drop, self.training)
            h, s = cell(h, None if state is None else state[i])
            h = F.dropout(h, self.drop, self.training)
            new_state.append(s)
        return F.linear(h, self.softmax_w, self.softmax_b), tuple(new_state)


# ------------------------------------------------------------------------------------------ batched (cohorts)
def batched_char_rnn(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
                     state: tuple[LSTMState, ...] | None, *, training: bool, drop: float
                     ) -> tuple[Tensor, tuple[LSTMState, ...]]:
    """:meth:`CharRNN.forward` for M models at once (``bench.engine.cohort``): ``params``/``buffers`` stacked
    (M, ...) under CharRNN's names, char ids x (batch, time) shared → logits (M, batch, time, vocab) and the new
    (h, c) of every layer, each (M, batch, hidden).

    ``aten::lstm`` has no vmap rule, so the LSTM runs as explicit gates over the stacked kernels (torch's gate order
    i, f, g, o; TF's forget bias added to the forget rows). Every model gets the dropout masks the single model
    draws: each mask is drawn, as ``F.dropout`` draws it there, on one (batch, time, features) tensor. Same
    function as :class:`CharRNN`, other kernels: not bit-identical to it.
    """
    emb = params["embedding"]
    m = emb.shape[0]
    h = emb[:, x]  # (M, B, T, H)
    new_state = []
    layer = 0
    while f"cells.{layer}.kernel" in params:
        h = _shared_dropout(h, drop, training)
        bias = params[f"cells.{layer}.bias"] + buffers[f"cells.{layer}.forget_bias"]
        h, s = _batched_lstm(h, params[f"cells.{layer}.kernel"], bias, None if state is None else state[layer])
        h = _shared_dropout(h, drop, training)
        new_state.append(s)
        layer += 1
    w, b = params["softmax_w"], params["softmax_b"]
    logits = torch.baddbmm(b.unsqueeze(1), h.reshape(m, -1, h.shape[-1]), w.transpose(1, 2))
    return logits.view(*h.shape[:-1], w.shape[1]), tuple(new_state)


def _shared_dropout(h: Tensor, p: float, training: bool) -> Tensor:
    if not training or p == 0.0:
        return h
    mask = F.dropout(torch.ones(h.shape[1:], dtype=h.dtype, device=h.device), p, True)  # one draw, as the single
    return h * mask


def _batched_lstm(x: Tensor, kernel: Tensor, bias: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
    """x (M, B, T, in), kernel (M, 4h, in + h), bias (M, 4h) → outputs (M, B, T, h) and the final (h, c)."""
    m, b, t, n_in = x.shape
    hidden = kernel.shape[1] // 4
    w_ih, w_hh = kernel[:, :, :n_in], kernel[:, :, n_in:]
    xp = torch.baddbmm(bias.unsqueeze(1), x.reshape(m, b * t, n_in), w_ih.transpose(1, 2)).view(m, b, t, 4 * hidden)
    if state is None:
        h = c = x.new_zeros(m, b, hidden)
    else:
        h, c = state
    w_hh_t = w_hh.transpose(1, 2)
    outs = []
    for step in range(t):
        gates = torch.baddbmm(xp[:, :, step], h, w_hh_t)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=2), (h, c)
