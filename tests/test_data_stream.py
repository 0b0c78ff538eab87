"""The data streams as DeepOBS's TF pipelines ran them (issue #16), on smoke data in the original formats.

* TF's ``shuffle(buffer_size)`` against a line-by-line port of its kernel written here, and its head bias;
* CIFAR-10 / SVHN: the file order re-drawn at every initialisation (``split=resampled``) vs a held-out
  validation set (``split=fixed``), and ``data_order=repeat`` applying one position permutation to each input;
* Tolstoi: ``ceil(0.8·n)`` and no newline translation; the CIFAR-100 shift in the study's configuration;
* ``Problem.state_dict``: a checkpointed stream continues bit-identically.

Records are identified by their bytes: the problems' ``transform`` is replaced by the identity on the instance, so
batches are the raw uint8 rows.
"""
from __future__ import annotations

import collections
import io
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench.spec import SpecError, make_spec
from problems import PROBLEMS
from problems.datasets import build, fake, parsers

CPU = torch.device("cpu")
CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One smoke data directory for the module (each data set is generated and converted once)."""
    return tmp_path_factory.mktemp("data")


def yaml_settings(name: str) -> dict:
    return {k: v for k, v in yaml.safe_load((CONF / "problem" / f"{name}.yaml").read_text()).items() if k != "name"}


def smoke(name: str, data_dir: Path, seed: int = 0, data_order: str = "repeat", raw: bool = True, **overrides):
    settings = {**yaml_settings(name), "size": "smoke", "batch_size": 8, **overrides}
    problem = PROBLEMS.get(name)(settings, seed, CPU, data_order, data_dir)
    problem.load_data()
    if raw:
        problem.transform = lambda batch, augment: batch  # the raw uint8 rows: records identifiable by their bytes
    return problem


def record_ids(problem) -> dict[bytes, int]:
    """Record bytes → index in canonical file order (CIFAR-10 data_batch_1..5; SVHN train_32x32.mat order)."""
    x = torch.cat([problem.data["valid"].x, problem.data["train"].x])
    ids = {bytes(row.numpy().tobytes()): i for i, row in enumerate(x)}
    assert len(ids) == len(x)  # smoke images are distinct
    return ids


def ids_of(batches, ids: dict[bytes, int]) -> list[int]:
    return [ids[bytes(row.numpy().tobytes())] for batch in batches for row in batch[0]]


# ------------------------------------------------------------------------------------ TF's shuffle(buffer_size)
def tf_shuffle_reference(n: int, buffer_size: int, uniforms: list[float]) -> list[int]:
    """A line-by-line port of TF's ``ShuffleDatasetOp`` iterator (TF 1.14–2.x ``shuffle_dataset_op.cc``,
    ``GetNextInternal``) for one pass over inputs 0..n−1, with ``Random() % size`` replaced by ``floor(u · size)``.

        while (input_impl_ && num_elements_ < buffer_size_) {        // fill the buffer
          ... buffer_[slices_.back()->end % buffer_size_] = input; num_elements_++; slices_.back()->end++; }
        int64 offset = Random() % (slices_.front()->end - slices_.front()->start);
        int64 index = (slices_.front()->start + offset) % buffer_size_;
        *out_tensors = std::move(buffer_[index]);
        std::swap(buffer_[index], buffer_[slices_.front()->start % buffer_size_]);
        slices_.front()->start++; num_elements_--;
    """
    buffer: list[int | None] = [None] * buffer_size
    start = end = 0  # the one slice of a pass without repeat
    num_elements, next_input, out = 0, 0, []
    draws = iter(uniforms)
    while True:
        while next_input < n and num_elements < buffer_size:
            buffer[end % buffer_size] = next_input
            next_input += 1
            num_elements += 1
            end += 1
        if num_elements == 0:
            return out
        size = end - start
        offset = min(int(next(draws) * size), size - 1)
        index = (start + offset) % buffer_size
        out.append(buffer[index])
        buffer[index] = None  # moved out
        buffer[index], buffer[start % buffer_size] = buffer[start % buffer_size], buffer[index]
        start += 1
        num_elements -= 1


@pytest.mark.parametrize("n,buffer_size", [(1000, 64), (50, 200), (300, 300), (257, 1), (5000, 2000), (1, 5)])
def test_buffer_shuffle_matches_tf_kernel_given_the_same_draws(n: int, buffer_size: int) -> None:
    from problems.base import tf_buffer_permutation

    ours = tf_buffer_permutation(n, buffer_size, torch.Generator().manual_seed(n), CPU)
    uniforms = torch.rand(n, generator=torch.Generator().manual_seed(n), dtype=torch.float64).tolist()
    assert ours.tolist() == tf_shuffle_reference(n, buffer_size, uniforms)
    assert sorted(ours.tolist()) == list(range(n))
    if buffer_size == 1:
        assert ours.tolist() == list(range(n))  # a buffer of one does not shuffle


def test_buffer_shuffle_head_bias_at_mnist_size() -> None:
    """50 000 records, buffer 20 000, 156 train_eval batches of 64: every train_eval row comes from the first 30 000
    input positions; a uniform permutation draws them from everywhere."""
    from problems.base import tf_buffer_permutation

    n, rows = 50_000, (10_000 // 64) * 64
    tf = tf_buffer_permutation(n, 20_000, torch.Generator().manual_seed(0), CPU)
    assert int(tf[:rows].max()) < 20_000 + rows < 30_000
    assert float(tf[:rows].double().mean()) < 0.6 * n / 2  # head-heavy: mean ≈ 13 000, not 25 000
    uniform = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    assert int(uniform[:rows].max()) > 0.99 * n
    assert abs(float(uniform[:rows].double().mean()) - n / 2) < 1_000
    # the dropped remainder (50 000 % 64 = 16 rows) comes from the last buffer: its tail-heavy
    assert float(tf[-(n % 64):].double().mean()) > 20_000 and float(tf[-20_000:].double().mean()) > n / 2


def test_buffer_shuffle_in_a_problem_stream(data_dir: Path) -> None:
    """fmnist_2c2d (one file): the default shuffle is TF's; with a 16-record buffer train_eval's first 64 rows come
    from the first 80 records of the input, the same positions as the training epoch's head (repeat)."""
    problem = smoke("fmnist_2c2d", data_dir, shuffle_buffer=16)
    problem.train_eval_size = 64
    ids = record_ids(problem)
    first = 256  # valid = the first 256 records of the file: training records are 256..767 in input order
    train_eval = ids_of(problem.eval_batches("train"), ids)
    epoch = ids_of(problem.train_batches(0), ids)
    assert len(train_eval) == 64 and max(train_eval) < first + 16 + 64
    assert train_eval == epoch[:64]
    assert ids_of(problem.train_batches(1), ids) == epoch  # one input order: the same epoch every time
    uniform = smoke("fmnist_2c2d", data_dir, shuffle="uniform")
    uniform.train_eval_size = 64
    assert max(ids_of(uniform.eval_batches("train"), ids)) > first + 16 + 64
    fresh = smoke("fmnist_2c2d", data_dir, data_order="fresh", shuffle_buffer=16)
    assert ids_of(fresh.train_batches(0), ids) != ids_of(fresh.train_batches(1), ids)


# ------------------------------------------------------------------------------------------- CIFAR-10 / SVHN
FILES = {"cifar10_3c3d": (256,) * 5, "svhn_wrn164": (160, 160, 160, 160, 128)}
VALID = 256


def file_of(record: int, files: tuple[int, ...]) -> int:
    return int(np.searchsorted(np.cumsum(files), record, side="right"))


@pytest.mark.parametrize("name", ["cifar10_3c3d", "svhn_wrn164"])
def test_resampled_split_changes_every_initialisation_and_covers_all(name: str, data_dir: Path) -> None:
    problem = smoke(name, data_dir)
    ids = record_ids(problem)
    n = sum(FILES[name])
    assert problem.steps_per_epoch() == (n - VALID) // 8
    seen_train: set[int] = set()
    train_sets, valid_sets = [], []
    for epoch in range(12):
        valid = ids_of(problem.eval_batches("valid"), ids)
        train = ids_of(problem.train_batches(epoch), ids)
        assert len(valid) == VALID and len(train) == n - VALID  # multiples of the batch size: nothing dropped
        train_sets.append(frozenset(train))
        valid_sets.append(frozenset(valid))
        seen_train |= set(train)
        # the epoch's training records = everything after the head of one file order: whole files in it
        held_out = set(range(n)) - set(train)
        assert len(held_out) == VALID
    assert seen_train == set(range(n))  # over a run TF trains on every record
    assert len(set(train_sets)) > 1 and len(set(valid_sets)) > 1
    assert any(v & t for v, t in zip(valid_sets, train_sets[1:]))  # an evaluation's valid was trained on
    if name == "cifar10_3c3d":  # valid = one whole data_batch file at every evaluation
        assert all(len({file_of(r, FILES[name]) for r in v}) == 1 for v in valid_sets)


@pytest.mark.parametrize("name", ["cifar10_3c3d", "svhn_wrn164"])
def test_fixed_split_never_touches_validation_records(name: str, data_dir: Path) -> None:
    problem = smoke(name, data_dir, split="fixed")
    ids = record_ids(problem)
    n = sum(FILES[name])
    orders = set()
    for epoch in range(8):
        assert ids_of(problem.eval_batches("valid"), ids) == list(range(VALID))  # the head, in file order
        train_eval = ids_of(problem.eval_batches("train"), ids)
        train = ids_of(problem.train_batches(epoch), ids)
        assert min(train) >= VALID and min(train_eval) >= VALID
        assert sorted(train) == list(range(VALID, n))
        orders.add(tuple(train))
    assert len(orders) > 1  # the training files' pieces are still read in a fresh order at every initialisation


def test_repeat_applies_one_position_permutation_to_each_file_order(data_dir: Path) -> None:
    """CIFAR-10 under repeat: each epoch's input is a new order of four files, shuffled by the run's one position
    permutation; under fresh the positions are new too."""
    files = FILES["cifar10_3c3d"]

    def positions(problem, epochs: int) -> list[list[tuple[int, ...]]]:
        """Per epoch, the position sequences consistent with some order of the epoch's four files."""
        ids = record_ids(problem)
        out = []
        for epoch in range(epochs):
            train = ids_of(problem.train_batches(epoch), ids)
            names = sorted({file_of(r, files) for r in train})
            assert len(names) == 4
            candidates = []
            for order in itertools.permutations(names):
                start = {f: 256 * i for i, f in enumerate(order)}
                candidates.append(tuple(start[file_of(r, files)] + r % 256 for r in train))
            out.append(candidates)
        return out

    problem = smoke("cifar10_3c3d", data_dir, shuffle_buffer=100)
    ids = record_ids(problem)
    assert ids_of(problem.train_batches(0), ids) != ids_of(problem.train_batches(1), ids)  # new input each epoch
    repeat = positions(problem, 4)
    common = set(repeat[0]).intersection(*map(set, repeat[1:]))
    # one position permutation explains every epoch (with the 23 relabellings of its four 256-record blocks)
    assert len(common) == 24
    head_first = [p for p in common if all(q < 100 + i for i, q in enumerate(p))]  # TF's buffer: output i < B + i
    assert len(head_first) == 1 and sorted(head_first[0]) == list(range(1024))
    fresh = positions(smoke("cifar10_3c3d", data_dir, data_order="fresh", shuffle_buffer=100), 3)
    assert not set(fresh[0]).intersection(*map(set, fresh[1:]))


def test_svhn_files_are_the_preprocessing_scripts() -> None:
    """``_svhn_preprocess.py`` opens a new binary when ``i > 0 and i % 12800 == 0``: five of 12 800, one of 9 257."""
    counts = collections.Counter()
    j = 0
    for i in range(73_257):
        if i > 0 and i % 12_800 == 0:
            j += 1
        counts[j] += 1
    assert build.FULL["svhn"].file_sizes() == tuple(counts[k] for k in range(6)) == (12_800,) * 5 + (9_257,)
    assert build.FULL["cifar10"].file_sizes() == (10_000,) * 5
    assert build.FULL["mnist"].file_sizes() == (60_000,)


# ----------------------------------------------------------------------------------------------------- Tolstoi
def test_tolstoi_split_is_ceil_and_crlf_keeps_its_carriage_return(tmp_path: Path) -> None:
    text = "".join(f"Line {i} of the text, {'x' * (i % 7)}\r\n" for i in range(400)) + "The end."
    text += "!" * next(k for k in range(5) if 4 * (len(text) + k) % 5)
    n = len(text)
    assert (4 * n) % 5 != 0  # ceil and floor differ
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "war-and-peace.txt").write_bytes(b"header 1\nheader 2\nheader 3\n" + text.encode())
    cut = -(-4 * n // 5)  # ceil(0.8 n) exactly
    lay = build.Layout(cut, n - cut, 100)
    splits = build.build_tolstoi(raw, lay, full=False)
    vocab = parsers.char_vocabulary(text)
    ids = np.array([vocab.index(c) for c in text])
    assert "\r" in vocab
    assert splits["valid"][0].tolist() + splits["train"][0].tolist() == ids[:cut].tolist()
    assert splits["test"][0].tolist() == ids[cut:].tolist() and len(splits["test"][0]) == n - math.ceil(0.8 * n)
    old = build.build_tolstoi(raw, lay, full=False, split_rule="floor", newlines="universal")  # protocol 1's reading
    plain = text.replace("\r\n", "\n")
    old_vocab = parsers.char_vocabulary(plain)
    assert "\r" not in old_vocab and len(old["test"][0]) == len(plain) - int(0.8 * len(plain))


def test_tolstoi_smoke_problem_reads_like_deepobs(data_dir: Path) -> None:
    problem = PROBLEMS.get("tolstoi_char_rnn")({**yaml_settings("tolstoi_char_rnn"), "size": "smoke"}, 0, CPU,
                                                "repeat", data_dir)
    problem.load_data()
    raw = (data_dir / "smoke" / "tolstoi" / "raw" / "war-and-peace.txt").read_bytes()
    text = parsers.delete_lines(raw, build.TOLSTOI_SMOKE_DELETIONS).decode("utf-8")
    assert "\r\n" in text and len(text) == 20_003
    cut = -(-4 * len(text) // 5)
    assert cut == 16_003 != int(0.8 * len(text))
    from problems import datasets

    splits = datasets.load("tolstoi", data_dir, size="smoke")
    assert len(splits["valid"][0]) + len(splits["train"][0]) == cut and len(splits["test"][0]) == len(text) - cut
    vocab = parsers.char_vocabulary(text)
    assert splits["test"][0].tolist() == [vocab.index(c) for c in text[cut:]]
    assert problem.state_dict()["positions"] is None  # never shuffled: nothing but the (unused) generator


# ---------------------------------------------------------------------------------------------- CIFAR-100, presets
def test_study_preset_feeds_the_study_inputs() -> None:
    """experiment=schmidt2021: CIFAR-100 read one byte early, TF's buffer shuffle, P4/P7 split re-drawn, Tolstoi
    split at ceil without newline translation."""
    from bench.tuning import sweep

    jobs = sweep.expand(["experiment=schmidt2021"], multirun=True)
    wanted = {}
    for job in jobs:
        problem = next(o.split("=", 1)[1] for o in job if o.startswith("problem="))
        if problem not in wanted and "optimizer=adam" in job and "budget=oneshot" in job:
            wanted[problem] = job
    configs = dict(zip(wanted, sweep.compose_jobs(list(wanted.values()))))
    assert configs["cifar100_allcnnc"]["problem"]["cifar100_offset_bug"] is True
    for name in ("mnist_vae", "fmnist_2c2d", "cifar10_3c3d", "fmnist_vae", "cifar100_allcnnc", "svhn_wrn164"):
        assert configs[name]["problem"]["shuffle"] == "tf_buffer"
        assert configs[name]["problem"]["shuffle_buffer"] == 20_000
    assert configs["cifar10_3c3d"]["problem"]["split"] == configs["svhn_wrn164"]["problem"]["split"] == "resampled"
    assert (configs["tolstoi_char_rnn"]["problem"]["split_rule"], configs["tolstoi_char_rnn"]["problem"]["newlines"]) \
        == ("ceil", "keep")


def test_cifar100_default_is_the_shifted_parse(data_dir: Path) -> None:
    problem = smoke("cifar100_allcnnc", data_dir)
    correct = smoke("cifar100_allcnnc", data_dir, cifar100_offset_bug=False)
    shifted, good = problem.data["train"], correct.data["train"]
    assert torch.equal(shifted.x.flatten(1)[:, 0], good.y.to(torch.uint8))  # first "pixel" = the fine-label byte
    assert torch.equal(shifted.x.flatten(1)[:, 1:], good.x.flatten(1)[:, :-1])
    assert torch.equal(problem.data["test"].x.flatten(1)[:, 1:], correct.data["test"].x.flatten(1)[:, :-1])


@pytest.mark.parametrize("name,key,bad,valid", [
    ("fmnist_2c2d", "shuffle", "random", "tf_buffer, uniform"),
    ("mnist_vae", "shuffle_buffer", 0, "an integer >= 1"),
    ("cifar10_3c3d", "split", "clean", "resampled, fixed"),
    ("svhn_wrn164", "split", True, "resampled, fixed"),
    ("cifar100_allcnnc", "cifar100_offset_bug", "yes", "true, false"),
    ("tolstoi_char_rnn", "split_rule", "round", "ceil, floor"),
    ("tolstoi_char_rnn", "newlines", "crlf", "keep, universal"),
])
def test_options_are_validated_in_one_line(name: str, key: str, bad, valid: str) -> None:
    hp = {k: v for k, v in yaml.safe_load((CONF / "optimizer" / "adam.yaml").read_text()).items() if k != "name"}
    with pytest.raises(SpecError, match=f"problem.{key}=") as info:
        make_spec(name, "adam", hp, problem_settings={**yaml_settings(name), key: bad})
    assert valid in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name,key,repair", [
    ("fmnist_2c2d", "shuffle", "uniform"), ("cifar10_3c3d", "split", "fixed"), ("svhn_wrn164", "split", "fixed"),
    ("cifar100_allcnnc", "cifar100_offset_bug", False), ("tolstoi_char_rnn", "split_rule", "floor"),
    ("tolstoi_char_rnn", "newlines", "universal"),
])
def test_each_repair_is_in_the_run_id(name: str, key: str, repair) -> None:
    hp = {k: v for k, v in yaml.safe_load((CONF / "optimizer" / "adam.yaml").read_text()).items() if k != "name"}
    tf = make_spec(name, "adam", hp, problem_settings=yaml_settings(name))
    repaired = make_spec(name, "adam", hp, problem_settings={**yaml_settings(name), key: repair})
    assert tf.problem_settings[key] != repair and repaired.problem_settings[key] == repair
    assert tf.run_id != repaired.run_id


def test_cache_keys_keep_their_meaning() -> None:
    """CIFAR-100's keys are protocol 1's (``splits`` = correct, ``-cifar100_offset_bug`` = shifted); Tolstoi's
    never reuse protocol 1's plain ``splits`` (floor, universal newlines)."""
    from problems.datasets import _cache_key, _options

    assert _cache_key("cifar100", "full", _options("cifar100", {})) == "splits-cifar100_offset_bug"
    assert _cache_key("cifar100", "full", _options("cifar100", {"cifar100_offset_bug": False})) == "splits"
    assert _cache_key("tolstoi", "full", _options("tolstoi", {})) == "splits-ceil-keep"
    legacy = _cache_key("tolstoi", "full", _options("tolstoi", {"split_rule": "floor", "newlines": "universal"}))
    assert legacy != "splits" and _cache_key("svhn", "full", _options("svhn", {})) == "splits"
    assert _cache_key("mnist", "smoke", _options("mnist", {})) == f"splits-smoke{fake.VERSION}"


# ----------------------------------------------------------------------------------------- checkpointed streams
def consume(problem, epochs: range) -> list[torch.Tensor]:
    """The run loop's order: evaluate train / valid / test, then train the epoch (every tensor of every batch)."""
    out: list[torch.Tensor] = []
    for epoch in epochs:
        for split in ("train", "valid", "test"):
            problem.reset_state()
            out += [t.clone() for b in problem.eval_batches(split) for t in b]
        problem.reset_state()
        out += [t.clone() for b in problem.train_batches(epoch) for t in b]
    return out


def make_problem(name: str, data_dir: Path, data_order: str):
    if name == "quadratic_deep":
        from tests.conftest import P1_SETTINGS

        problem = PROBLEMS.get(name)(P1_SETTINGS, 3, CPU, data_order)
    else:
        overrides = {"shuffle_buffer": 100} if name == "cifar10_3c3d" else {}
        settings = {**yaml_settings(name), "size": "smoke", "batch_size": 32, **overrides}
        problem = PROBLEMS.get(name)(settings, 3, CPU, data_order, data_dir)
    problem.load_data()
    return problem


@pytest.mark.parametrize("data_order", ["repeat", "fresh"])
@pytest.mark.parametrize("name", ["cifar10_3c3d", "fmnist_2c2d", "quadratic_deep"])
def test_state_dict_continues_bit_identically(name: str, data_order: str, data_dir: Path) -> None:
    """Epochs 0..2, save, epochs 3..4 — and a fresh problem that loaded the saved state gives the same 3..4
    (augmented CIFAR-10 batches included: the augmentation draws continue too)."""
    problem = make_problem(name, data_dir, data_order)
    head = consume(problem, range(3))
    buffer = io.BytesIO()
    torch.save(problem.state_dict(), buffer)
    assert buffer.tell() < 16 * 1024 + 8 * problem.train_size()  # small: no data, at most the permutation
    tail = consume(problem, range(3, 5))
    buffer.seek(0)
    restored = make_problem(name, data_dir, data_order)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    again = consume(restored, range(3, 5))
    assert len(again) == len(tail) > 0
    assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(tail, again))
    if name == "cifar10_3c3d" or data_order == "fresh":  # streams that advance: without the state they differ
        different = make_problem(name, data_dir, data_order)
        assert not all(torch.equal(a, b) for a, b in zip(tail, consume(different, range(3, 5))))
    assert len(head) > 0


def test_state_dict_refuses_another_stream(data_dir: Path) -> None:
    state = make_problem("fmnist_2c2d", data_dir, "repeat").state_dict()
    other = smoke("fmnist_2c2d", data_dir, raw=False, batch_size=32, shuffle="uniform")
    with pytest.raises(ValueError, match="shuffle"):
        other.load_state_dict(state)
