"""The test-problem interface (AlgoPerf's "workload"): model, loss, metric and a data pipeline on the device.

The run loop only calls the methods below; everything DeepOBS-specific about a problem (its initialisers, its L2 on
kernels, its stateful LSTM, its augmentation) stays in the problem's own module.

Data stream contract (DeepOBS TF semantics, §0.1, §0.1b, §0.2, §1.9). Each split is held whole on the run's device
(uint8 where the data are images, converted per batch). DeepOBS re-initialises a dataset iterator for every pass
(runner.py: ``train_eval_init_op``, ``valid_init_op``, ``test_init_op`` at every evaluation, in that order, then
``train_init_op`` at the start of every training epoch); here ``train_batches(epoch)`` and ``eval_batches(split)``
are one such *initialisation* each. An initialisation of the train or train_eval stream

1. fixes the *input order* of the training records (``input_order``: the stored order by default; CIFAR-10 / SVHN
   re-draw their file order, ``problems._image``);
2. shuffles it: the shuffle's output order of the input *positions* (``shuffle``: ``tf_buffer`` emulates TF's
   ``Dataset.shuffle(buffer_size)`` — see ``tf_shuffle_order`` — and ``uniform`` is a uniform permutation,
   ``torch.randperm``). The position permutation depends only on the random draws, never on the values, so under
   ``data_order=repeat`` it is drawn once per run and reused by every train *and* train_eval initialisation: with
   the graph seed fixed, TF bakes the shuffle's seeds into the graph and a re-initialised iterator restarts its
   random stream (§0.1b), and ``train_eval = train.take(k)`` wraps the same shuffle, so it replays the same draws.
   ``data_order=fresh`` draws a new position permutation at every initialisation;
3. keeps the first ``(n // batch_size) · batch_size`` outputs (drop remainder) for training, the first
   ``train_eval_size // batch_size`` batches for train_eval (augmented, as TF's ``train_eval`` is a ``take`` of
   the augmented training stream);
4. augments per batch in ``transform`` (fresh draws at every pass).

``valid`` and ``test`` are read in order, neither shuffled nor augmented (CIFAR-10 / SVHN take ``valid`` from the
head of the initialisation's file order). Every random draw of the data stream comes from ``self.generator`` (a
``torch.Generator`` on the run's device, seeded with the run's seed), in this fixed order per initialisation: input
order, position draws (when drawn), augmentation batch by batch. The global RNG is left to model init and dropout.
No host sync happens inside a training step; ``tf_buffer`` computes an initialisation's position permutation on the
host when it draws one (once per run under ``repeat``, at every initialisation under ``fresh``).

``state_dict`` / ``load_state_dict`` capture the mutable part of the stream at an epoch boundary (see there).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from bench.registry import Registry

Batch = tuple[Tensor, ...]

SHUFFLES = ("tf_buffer", "uniform")
TF_SHUFFLE_BUFFER = 20_000  # DeepOBS: data.shuffle(buffer_size=20000) in every image data set (§0.2)
STATE_VERSION = 1


@dataclass
class Split:
    """One data split on the device: inputs and (where the problem has them) targets, first dimension = examples."""

    x: Tensor
    y: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def take(self, index: Tensor | slice) -> Batch:
        return (self.x[index],) if self.y is None else (self.x[index], self.y[index])


def tf_shuffle_offsets(n: int, buffer_size: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """The ``n`` random draws of one pass of TF's shuffle over ``n`` inputs: draw ``i`` is uniform in
    ``[0, min(buffer_size, n − i))``, the number of elements in the buffer when output ``i`` is chosen (TF:
    ``Random() % num_elements``). One ``torch.rand`` (float64) of ``n`` values, on the generator's device."""
    sizes = (n - torch.arange(n, device=device)).clamp_(max=buffer_size)
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    return torch.minimum((u * sizes).long(), sizes - 1)


def tf_shuffle_order(offsets: Sequence[int], n: int, buffer_size: int) -> list[int]:
    """The input positions in the order TF's ``Dataset.shuffle(buffer_size)`` emits them, given its draws.

    TF 1.14–2.x ``ShuffleDatasetOp`` iterator (``shuffle_dataset_op.cc``, ``GetNextInternal``) for one pass: fill a
    ring buffer of ``buffer_size`` elements from the input; then per output take the element ``offset`` places
    after the front (``offset = Random() % num_elements``), move the front element into its slot, advance the
    front and refill the freed slot with the next input (once the input is exhausted the buffer drains the same
    way). Early outputs therefore come from the head of the input: output ``i`` is among inputs
    ``[0, buffer_size + i)``. TF ≤ 1.13 moved the *last* element into the chosen slot instead: the same distribution
    over orders (each output is uniform over the buffer's content either way), another map from draws to orders;
    TF's own Philox draws cannot be reproduced, so only the distribution matters. Pure Python, O(n): ~10 ms for
    50 000 inputs.
    """
    size = min(n, buffer_size)
    ring = list(range(size))  # the physical buffer; with n <= buffer_size the ring never wraps
    out = [0] * n
    front, refill = 0, size
    for i, offset in enumerate(offsets):
        slot = front + offset
        if slot >= buffer_size:
            slot -= buffer_size
        out[i] = ring[slot]
        ring[slot] = ring[front]
        if refill < n:
            ring[front] = refill
            refill += 1
        front += 1
        if front == buffer_size:
            front = 0
    return out


def tf_buffer_permutation(n: int, buffer_size: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """One pass of TF's buffer shuffle over ``n`` input positions (draws on the device, the order on the host)."""
    offsets = tf_shuffle_offsets(n, buffer_size, generator, device).tolist()  # one host sync per drawn pass
    return torch.tensor(tf_shuffle_order(offsets, n, buffer_size), dtype=torch.long, device=device)


def check_choice(settings: Mapping[str, Any], key: str, choices: Sequence[Any]) -> None:
    """One clear line when ``settings[key]`` (if present) is not one of ``choices``."""
    if key in settings:
        value = settings[key]
        if not any(type(value) is type(c) and value == c for c in choices):
            shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
            raise ValueError(f"invalid problem.{key}={value!r}: must be one of {shown}")


def check_int(settings: Mapping[str, Any], key: str, minimum: int) -> None:
    if key in settings:
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"invalid problem.{key}={value!r}: must be an integer >= {minimum}")


class Problem:
    """Base class of test problems. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]
    study_name: ClassVar[str]  # DeepOBS name in the published results
    has_accuracy: ClassVar[bool] = False
    train_eval_size: ClassVar[int | None] = None  # examples of the train stream evaluated per epoch (None: all)
    shuffle_settings: ClassVar[bool] = False
    """Whether ``shuffle`` / ``shuffle_buffer`` are settings of the problem (P2–P7; default ``tf_buffer`` with
    20 000). Without them the shuffle is ``uniform``: P1's 1 000 records are fewer than TF's buffer, so TF's shuffle
    is a uniform permutation there, drawn with ``torch.randperm`` as in protocol version 1."""

    def __init__(self, settings: Mapping[str, Any], seed: int, device: torch.device, data_order: str = "repeat",
                 data_dir: str | Path | None = None) -> None:
        if data_order not in ("repeat", "fresh"):
            raise ValueError(f"invalid data_order={data_order!r}: must be one of repeat, fresh")
        self.settings = dict(settings)
        self.batch_size: int = int(self.settings["batch_size"])
        self.num_epochs: int = int(self.settings["num_epochs"])
        self.weight_decay: float = float(self.settings.get("weight_decay") or 0.0)
        self.seed = seed
        self.device = device
        self.data_order = data_order
        self.data_dir = Path(data_dir).expanduser() if data_dir is not None else None
        # Data order and augmentation draw from their own generator so that model init and dropout (global RNG)
        # do not shift the data stream when a problem changes.
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.data: dict[str, Split] = {}
        self.shuffle = str(self.settings.get("shuffle", SHUFFLES[0])) if self.shuffle_settings else "uniform"
        self.shuffle_buffer = int(self.settings.get("shuffle_buffer", TF_SHUFFLE_BUFFER))
        if self.shuffle not in SHUFFLES:
            raise ValueError(f"invalid problem.shuffle={self.shuffle!r}: must be one of {', '.join(SHUFFLES)}")
        self._positions: Tensor | None = None  # data_order=repeat: the run's one position permutation
        self._epoch_rows: Batch | None = None  # data_order=repeat with a fixed input order: the epoch's rows
        self._l2_params: list[nn.Parameter] | None = None

    @classmethod
    def split_sizes(cls, settings: Mapping[str, Any]) -> dict[str, int]:
        """Examples per evaluated split (train = the train-eval stream) before any data are loaded, in the units a
        batch counts (images, sequences); {} when not known. ``bench.spec`` rejects a batch larger than any of
        them (DeepOBS evaluates ``n // batch_size`` batches: zero of them is no evaluation at all)."""
        return {}

    # ----------------------------------------------------------------------------------------------- to implement
    def load_data(self) -> None:
        """Fill ``self.data`` with ``train``, ``valid`` and ``test`` splits on ``self.device``."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """The model with the TF initialisers; called after ``torch.manual_seed(seed)``, moved to the device by the caller."""
        raise NotImplementedError

    def compute(self, model: nn.Module, batch: Batch, training: bool) -> tuple[Tensor, Tensor | None]:
        """Batch-mean loss *including* the L2 regularizer, and the batch accuracy (None when not needed or defined).

        When ``training`` is true the accuracy may be skipped (return None): the training step never reads it.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- overridable
    def sampled_loss_terms(self) -> int:
        """How many independent terms ``sampled_loss`` averages (examples per batch; tokens for per-token losses)."""
        return self.batch_size

    def sampled_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """Batch-mean loss on targets drawn from the model's own predictive distribution (no L2).

        Its gradient's square is the Gauss–Newton–Bartlett estimate of the Hessian diagonal (Sophia-G). Problems
        define it from their likelihood: softmax → categorical draws, squared error → Gaussian draws.
        """
        raise NotImplementedError(f"problem {self.name} has no sampled_loss (needed by Sophia-G)")

    def transform(self, batch: Batch, augment: bool) -> Batch:
        """Per-batch preprocessing on the device (uint8 → float); ``augment`` is true for the train stream."""
        return batch

    def reset_state(self) -> None:
        """Called at the start of every training epoch and every evaluation pass (stateful models reset here)."""

    def eval_batch_size(self) -> int:
        """Batch size for evaluation; the mean of equal-size batch means equals the mean over the evaluated rows."""
        return self.batch_size

    def l2_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters under L2 (§0.3): conv and dense kernels only, never biases or batch-norm parameters."""
        return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]

    def regularizer(self, model: nn.Module) -> Tensor | float:
        """``0.5 * wd * sum ||W||^2`` over the kernels (TF ``l2_regularizer``); 0.0 when the problem has no decay."""
        if self.weight_decay == 0.0:
            return 0.0
        if self._l2_params is None:  # the kernel list is fixed for the run: found once, not every step
            self._l2_params = self.l2_parameters(model)
        params = self._l2_params
        return 0.5 * self.weight_decay * torch.stack([p.square().sum() for p in params]).sum()

    # ------------------------------------------------------------------------------------------------ data stream
    def train_source(self) -> Split:
        """The records the train / train_eval streams index into (``stream_indices``)."""
        return self.data["train"]

    def train_size(self) -> int:
        """Records one train / train_eval initialisation reads (before drop-remainder)."""
        return len(self.data["train"])

    def steps_per_epoch(self) -> int:
        return self.train_size() // self.batch_size

    def input_order(self, stream: str) -> Tensor | None:
        """Indices into ``train_source()`` of this initialisation's training records in input order (before the
        shuffle), or None for the stored order. Called once per initialisation of ``stream`` (``train``,
        ``train_eval``); may draw from the generator (it is the first draw of its initialisation)."""
        return None

    def input_order_is_fixed(self) -> bool:
        """True when ``input_order`` never changes (and draws nothing): ``repeat`` can then gather once per run."""
        return True

    def draw_positions(self, n: int) -> Tensor:
        """A new output order of ``n`` input positions: TF's buffer shuffle or a uniform permutation."""
        if self.shuffle == "uniform":
            return torch.randperm(n, generator=self.generator, device=self.device)
        return tf_buffer_permutation(n, self.shuffle_buffer, self.generator, self.device)

    def stream_positions(self) -> Tensor:
        """The position permutation of a train / train_eval initialisation: the run's one under ``repeat``
        (drawn at the first initialisation), a new one at every initialisation under ``fresh``."""
        if self.data_order == "fresh":
            return self.draw_positions(self.train_size())
        if self._positions is None:
            self._positions = self.draw_positions(self.train_size())
        return self._positions

    def stream_indices(self, stream: str, rows: int) -> Tensor:
        """Indices into ``train_source()`` of the first ``rows`` outputs of one initialisation of ``stream``
        (``train`` or ``train_eval``): input order first, then the shuffle's positions."""
        order = self.input_order(stream)
        positions = self.stream_positions()[:rows]
        return positions if order is None else order[positions]

    def epoch_rows(self, epoch: int) -> Batch:
        """The epoch's training rows in stream order, drop-remainder, gathered in one index operation.

        With ``data_order=repeat`` and a fixed input order every epoch sees the same rows in the same order, so
        they are gathered once per run (one extra copy of the training set on the device) and batches are views:
        no per-step gather at all. Otherwise the epoch's rows are gathered at the start of the epoch.
        """
        if self._epoch_rows is not None:
            return self._epoch_rows
        rows = self.steps_per_epoch() * self.batch_size
        out = self.train_source().take(self.stream_indices("train", rows))
        if self.data_order == "repeat" and self.input_order_is_fixed():
            self._epoch_rows = out
        return out

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """Drop-remainder batches of the epoch's stream, transformed (augmented) on the device."""
        rows, bs = self.epoch_rows(epoch), self.batch_size
        for i in range(rows[0].shape[0] // bs):
            yield self.transform(tuple(t[i * bs:(i + 1) * bs] for t in rows), augment=True)

    def valid_rows(self) -> tuple[Split, Tensor | None]:
        """Where one initialisation of ``valid`` reads from: a split and indices into it (None: all, in order)."""
        return self.data["valid"], None

    def eval_batches(self, split_name: str) -> Iterator[Batch]:
        """The rows DeepOBS evaluates, in chunks of ``eval_batch_size()`` (the loop weights chunks by their size).

        DeepOBS evaluates ``n // batch_size`` equal batches; ``train`` is the head of the shuffled, augmented
        training stream (``train_eval_size`` examples), ``valid``/``test`` are read in order.
        """
        bs, chunk = self.batch_size, self.eval_batch_size()
        if split_name == "train":
            n = self.train_size() if self.train_eval_size is None else min(self.train_eval_size, self.train_size())
            rows = (n // bs) * bs
            index, source = self.stream_indices("train_eval", rows), self.train_source()
            for i in range(0, rows, chunk):
                yield self.transform(source.take(index[i:min(i + chunk, rows)]), augment=True)
            return
        split, order = self.valid_rows() if split_name == "valid" else (self.data[split_name], None)
        count = len(split) if order is None else order.shape[0]
        rows = (count // bs) * bs
        for i in range(0, rows, chunk):
            part = slice(i, min(i + chunk, rows))
            yield self.transform(split.take(part if order is None else order[part]), augment=False)

    # ------------------------------------------------------------------------------------------ checkpoint state
    def stream_signature(self) -> dict[str, Any]:
        """What a saved stream state is only valid for (checked by ``load_state_dict``)."""
        return {"problem": getattr(self, "name", type(self).__name__), "data_order": self.data_order,
                "shuffle": self.shuffle, "shuffle_buffer": self.shuffle_buffer}

    def state_dict(self) -> dict[str, Any]:
        """Everything mutable about the data stream, taken at an epoch boundary (before an evaluation pass or a
        training epoch begins; not in the middle of one).

        That is the generator's state — it carries every later draw: file orders, position permutations under
        ``fresh``, augmentation — and the run's cached position permutation under ``repeat`` (int32 on the CPU,
        4 bytes per training record; None before the first train / train_eval pass). Gathered epoch rows are
        not stored: they are recomputed from the data and the permutation. A problem constructed with the same
        settings, seed and data order, ``load_data()``-ed and given this state with ``load_state_dict`` continues
        with bit-identical batches and evaluation draws. Model-side state (LSTM carry-over) is reset at every
        initialisation, so nothing of it lives across an epoch boundary.
        """
        positions = None if self._positions is None else self._positions.to("cpu", torch.int32)
        return {"version": STATE_VERSION, "stream": self.stream_signature(),
                "generator": self.generator.get_state(), "positions": positions}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the stream ``state`` was taken from (after ``load_data()``); ValueError if it does not fit."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"data-stream state version {state.get('version')!r}, expected {STATE_VERSION}")
        mine = self.stream_signature()
        if dict(state["stream"]) != mine:
            diff = {k: (state["stream"].get(k), v) for k, v in mine.items() if state["stream"].get(k) != v}
            raise ValueError(f"data-stream state does not fit this problem (saved vs here: {diff})")
        positions = state["positions"]
        if positions is not None and positions.shape != (self.train_size(),):
            raise ValueError(f"data-stream state has {positions.shape[0]} positions, the training stream "
                             f"{self.train_size()} records")
        self.generator.set_state(state["generator"])
        self._positions = None if positions is None else positions.to(self.device, torch.long)
        self._epoch_rows = None

    def num_parameters(self, model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)


PROBLEMS: Registry[Problem] = Registry("problem", "problems")
