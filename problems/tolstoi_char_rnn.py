"""P8 tolstoi_char_rnn: a stateful 2-layer LSTM character model of War and Peace (§1 P8, TF ``tolstoi_char_rnn.py``).

Data (``_tolstoi_preprocess.py``, then TF ``datasets/tolstoi.py``): the text is read with ``codecs.open`` — binary
mode, so ``\\r\\n`` line ends stay two characters (``newlines: keep``; ``universal`` translates them) — mapped to
ids by character frequency, and ``train.npy`` is the first ``int(np.ceil(0.8 · n))`` ids, ``test.npy`` the rest
(``split_rule: ceil``; ``floor`` = ``int(0.8 · n)``, protocol version 1's rule). ``valid`` = the first 653 237 ids of
``train.npy``, train = the rest. A split's char ids are cut into ``nb = (n − 1) // (B·T)`` batches of B = 50
parallel streams of length T = 50 — ``x = ids[:nb·B·T].reshape(B, −1)``, batch i = columns [i·T, (i+1)·T), targets
shifted by one char. Never shuffled (the model is stateful; TF's pipeline has no ``shuffle``), so ``data_order``
has no effect here and the data stream draws nothing. ``train_eval`` = the first ``653 237 // (B·T)`` (= 261)
batches of the training stream, as DeepOBS' ``_make_train_datasets`` takes ``train_eval_size // (batch_size ·
seq_length)`` batches; ``valid``/``test`` use all of their batches. (DeepOBS 1.2.0b0's TF problem assigns
``train_eval_init_op`` twice, the second time the validation iterator, and never sets ``valid_init_op``; the typo
is fixed in DeepOBS's develop branch, which the study's code followed, so train_eval on the training stream and
valid on the validation split is the study code's behaviour, §1 P8.)

State: the LSTM (h, c) of every layer is carried from batch to batch (detached: truncated BPTT over one batch) and
reset to zero by ``reset_state()``, which the run loop calls at the start of each training epoch and each
evaluation pass (TF's ``*_init_op`` reset the state variables). The state advances once per *batch*: repeated
closure evaluations of the same batch (L-BFGS, SAM, Sophia's sampled loss) all start from the state the batch
entered with, and the last one's final state is carried on.

Loss: ``sequence_loss`` averaged over time per sequence, then over the batch — the mean over all B·T characters;
accuracy the mean over the same characters. No weight decay (TF has no regularizer here).
Optimizer note (not reproducible in a problem): TF hands the embedding a sparse ``IndexedSlices`` gradient, and
TF's sparse Momentum/RMSProp/Adagrad/Adadelta kernels update only the rows of characters present in the batch;
torch optimizers see a dense gradient with zero rows. Adam-type TF kernels decay all rows, as torch does.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from problems._char_rnn import CharRNN, LSTMState
from problems._image import sample_categorical
from problems.base import PROBLEMS, Batch, Problem, Split, check_choice

VOCAB_SIZE = 83
RNN_SIZE = 128
NUM_LAYERS = 2
KEEP_PROB = 0.8
TRAIN_EVAL_CHARS = 653_237  # DeepOBS tolstoi(train_eval_size=653237), the size of its test set


def char_batches(ids: Tensor, batch_size: int, seq_length: int) -> tuple[Tensor, Tensor]:
    """(x, y) of shape (num_batches, batch_size, seq_length) from a 1-D id tensor, exactly as DeepOBS cuts them."""
    per_batch = batch_size * seq_length
    num_batches = (ids.numel() - 1) // per_batch
    if num_batches == 0:
        raise ValueError(f"{ids.numel()} chars are fewer than one batch of {batch_size}×{seq_length} + 1")
    x = ids[:num_batches * per_batch].reshape(batch_size, num_batches, seq_length)
    y = ids[1:num_batches * per_batch + 1].reshape(batch_size, num_batches, seq_length)
    return x.transpose(0, 1).contiguous(), y.transpose(0, 1).contiguous()


def _detach(state: tuple[LSTMState, ...]) -> tuple[LSTMState, ...]:
    return tuple((h.detach(), c.detach()) for h, c in state)


@PROBLEMS.register
class TolstoiCharRnn(Problem):
    study_name = "tolstoi_char_rnn"
    has_accuracy = True
    train_eval_size = TRAIN_EVAL_CHARS

    def __init__(self, settings: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(settings, *args, **kwargs)
        self.seq_length = int(self.settings.get("seq_length", 50))
        self.reset_state()

    @classmethod
    def split_sizes(cls, settings: Mapping[str, Any]) -> dict[str, int]:
        """Sequences of ``seq_length`` characters (+ the one-char shift) in the valid and test splits (the training
        part is larger than both)."""
        from problems.datasets import build

        t = settings.get("seq_length", 50)
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            return {}
        lay = build.layout("tolstoi", settings.get("size", "full") if settings.get("size") in ("full", "smoke")
                           else "full")
        return {"valid": (lay.valid - 1) // t, "test": (lay.test - 1) // t}

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings.get("weight_decay"):
            raise ValueError(f"invalid problem.weight_decay={settings['weight_decay']!r}: "
                             "tolstoi_char_rnn has no L2 regularizer in DeepOBS; must be 0")
        t = settings.get("seq_length", 50)
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"invalid problem.seq_length={t!r}: must be an integer >= 1")
        from problems.datasets import OPTIONS

        for option, choices in OPTIONS["tolstoi"].items():
            check_choice(settings, option, choices)

    # ------------------------------------------------------------------------------------------------------ data
    def load_data(self) -> None:
        from problems import datasets

        options = {key: self.settings[key] for key in datasets.OPTIONS["tolstoi"] if key in self.settings}
        splits = datasets.load("tolstoi", self.data_dir, size=self.settings.get("size", "full"), **options)
        self.data = {}
        for name, (ids, _) in splits.items():
            if int(ids.max()) >= VOCAB_SIZE or int(ids.min()) < 0:
                raise ValueError(f"tolstoi {name} split has char ids outside [0, {VOCAB_SIZE})")
            x, y = char_batches(ids.long(), self.batch_size, self.seq_length)
            self.data[name] = Split(x.to(self.device), y.to(self.device))

    def train_size(self) -> int:
        return len(self.data["train"])

    def steps_per_epoch(self) -> int:
        return len(self.data["train"])

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        split = self.data["train"]
        for i in range(len(split)):
            yield split.take(i)

    def eval_batches(self, split_name: str) -> Iterator[Batch]:
        """Stateful: one batch at a time in stream order (``eval_batch_size`` is the training batch size)."""
        split = self.data[split_name]
        n = len(split)
        if split_name == "train":
            n = min(n, self.train_eval_size // (self.batch_size * self.seq_length))
        for i in range(n):
            yield split.take(i)

    # ----------------------------------------------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        return CharRNN(VOCAB_SIZE, RNN_SIZE, NUM_LAYERS, KEEP_PROB)

    def l2_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """None: the TF problem has no regularizer (and the base rule would find no conv/linear kernels anyway)."""
        return []

    def reset_state(self) -> None:
        self._batch: Batch | None = None
        self._state_in: tuple[LSTMState, ...] | None = None
        self._state_out: tuple[LSTMState, ...] | None = None

    def _entering_state(self, batch: Batch) -> tuple[LSTMState, ...] | None:
        """The state this batch starts from: the previous batch's final state, fixed for repeated calls."""
        if batch is not self._batch:
            self._batch, self._state_in = batch, self._state_out
        return self._state_in

    def compute(self, model: nn.Module, batch: Batch, training: bool) -> tuple[Tensor, Tensor | None]:
        x, y = batch
        logits, state = model(x, self._entering_state(batch))
        self._state_out = _detach(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        accuracy = None if training else (logits.argmax(dim=-1) == y).float().mean()
        return loss, accuracy

    def sampled_loss_terms(self) -> int:
        """The sampled loss averages one term per predicted character (Sophia-G's B)."""
        return self.batch_size * self.seq_length

    def sampled_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Cross-entropy on next chars drawn from the model's softmax at every position (state not advanced)."""
        logits, _ = model(batch[0], self._entering_state(batch))
        logits = logits.reshape(-1, logits.shape[-1])
        return F.cross_entropy(logits, sample_categorical(logits.detach()))
