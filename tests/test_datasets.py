"""Data layer: parsers of the original formats, splits of §1.9, downloads (checksum, resume, offline), cache, CLI.

Reference files are built here byte by byte (struct / tarfile / scipy.io / sed), independently of the package's own
writers, and the smoke generators are checked to produce the same formats.
"""
from __future__ import annotations

import collections
import gzip
import hashlib
import io
import shutil
import struct
import subprocess
import tarfile
import threading
import urllib.error
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from bench import data_cli
from problems import datasets
from problems.datasets import build, cache, download, fake, parsers, sources
from problems.datasets.errors import ChecksumError, DataFormatError, DataMissingError
from problems.datasets.sources import RemoteFile


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download.time, "sleep", lambda _: None)


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tar_gz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _pattern(n: int, c: int = 3, h: int = 32, w: int = 32) -> np.ndarray:
    """value(n, c, h, w) = (n + 7c + 3h + w) % 256: every pixel position distinguishable from its neighbours."""
    idx = np.indices((n, c, h, w))
    return ((idx[0] + 7 * idx[1] + 3 * idx[2] + idx[3]) % 256).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------- parsers
def test_idx_parser_reads_hand_built_file(tmp_path: Path) -> None:
    images = _pattern(5, 1, 28, 28)[:, 0]
    raw = struct.pack(">BBBBIII", 0, 0, 8, 3, 5, 28, 28) + images.tobytes()
    (tmp_path / "img.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "lab.gz").write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + bytes([3, 1, 4, 1, 5])))
    x = parsers.read_idx_images(tmp_path / "img.gz")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(x[:, 0], images)
    assert x[2, 0, 3, 4] == raw[16 + 2 * 784 + 3 * 28 + 4]  # row-major rows of 28 after the 16-byte header
    y = parsers.read_idx_labels(tmp_path / "lab.gz")
    assert y.dtype == np.int64 and y.tolist() == [3, 1, 4, 1, 5]
    assert fake.idx_bytes(images) == raw  # the smoke writer produces the same bytes


def test_idx_parser_rejects_bad_magic_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "bad.gz").write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 9, 1, 3) + b"abc"))
    with pytest.raises(DataFormatError, match="bad.gz"):
        parsers.read_idx(tmp_path / "bad.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 5) + b"abc"))
    with pytest.raises(DataFormatError, match="short.gz"):
        parsers.read_idx(tmp_path / "short.gz")


def _cifar10_reference(path: Path, per_file: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Hand-built cifar-10-binary.tar.gz: record = label byte, then R plane, G plane, B plane (row-major 32x32)."""
    content, members = {}, {}
    for k, name in enumerate(parsers.CIFAR10_MEMBERS):
        x = _pattern(per_file) + np.uint8(k)
        y = (np.arange(per_file) * (k + 1)) % 10
        content[name] = (x, y)
        records = b"".join(bytes([y[i]]) + x[i, 0].tobytes() + x[i, 1].tobytes() + x[i, 2].tobytes()
                           for i in range(per_file))
        members[f"cifar-10-batches-bin/{name}.bin"] = records
    members["cifar-10-batches-bin/readme.html"] = b"<html/>"
    _tar_gz(path, members)
    return content


def test_cifar10_parser_pixel_placement(tmp_path: Path) -> None:
    ref = _cifar10_reference(tmp_path / "c10.tar.gz", 4)
    parsed = parsers.read_cifar10_archive(tmp_path / "c10.tar.gz")
    assert set(parsed) == set(parsers.CIFAR10_MEMBERS)
    for name, (x, y) in ref.items():
        assert parsed[name][0].shape == (4, 3, 32, 32)
        assert np.array_equal(parsed[name][0], x) and parsed[name][1].tolist() == y.tolist()
    # CHW, not HWC: byte 1 + 1024 (first green byte) of record 0 is pixel (c=1, h=0, w=0)
    raw = tarfile.open(tmp_path / "c10.tar.gz").extractfile("cifar-10-batches-bin/data_batch_1.bin").read()
    assert parsed["data_batch_1"][0][0, 1, 0, 0] == raw[1 + 1024]
    assert parsed["data_batch_1"][0][0, 0, 1, 0] == raw[1 + 32]
    # the smoke writer produces the same member layout
    fake.write_cifar10_archive(tmp_path / "w.tar.gz", ref)
    again = parsers.read_cifar10_archive(tmp_path / "w.tar.gz")
    assert all(np.array_equal(again[n][0], ref[n][0]) for n in ref)


def test_cifar10_parser_requires_all_members(tmp_path: Path) -> None:
    _tar_gz(tmp_path / "c.tar.gz", {"cifar-10-batches-bin/data_batch_1.bin": b"\0" * 3073})
    with pytest.raises(DataFormatError, match="test_batch.bin"):
        parsers.read_cifar10_archive(tmp_path / "c.tar.gz")


def test_cifar100_fine_label_and_offset_bug(tmp_path: Path) -> None:
    n = 6
    x = _pattern(n) + np.uint8(1)
    coarse, fine = np.arange(n) + 10, np.arange(n) * 13 + 1
    records = b"".join(bytes([coarse[i], fine[i]]) + x[i].tobytes() for i in range(n))
    _tar_gz(tmp_path / "c100.tar.gz", {"cifar-100-binary/train.bin": records, "cifar-100-binary/test.bin": records})
    good = parsers.read_cifar100_archive(tmp_path / "c100.tar.gz")
    assert np.array_equal(good["train"][0], x) and good["train"][1].tolist() == fine.tolist()
    buggy = parsers.read_cifar100_archive(tmp_path / "c100.tar.gz", offset_bug=True)
    flat = buggy["test"][0].reshape(n, -1)
    assert buggy["test"][1].tolist() == fine.tolist()
    assert flat[:, 0].tolist() == fine.tolist()  # first "pixel" is the fine-label byte
    assert np.array_equal(flat[:, 1:], x.reshape(n, -1)[:, :-1])  # everything shifted by one, last blue pixel lost
    assert buggy["test"][0][0, 1, 0, 0] == x[0, 0, 31, 31]  # channel boundary misaligned by one byte


def test_svhn_parser_layout_and_label_ten(tmp_path: Path) -> None:
    n = 5
    rng = np.random.default_rng(0)
    matlab_x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # (row, col, channel, example)
    y = np.array([[10], [1], [9], [10], [5]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "s.mat", {"X": matlab_x, "y": y}, format="5")
    assert (tmp_path / "s.mat").read_bytes().startswith(b"MATLAB 5.0 MAT-file")
    x, labels = parsers.read_svhn_mat(tmp_path / "s.mat")
    assert x.shape == (n, 3, 32, 32) and x.flags.c_contiguous
    for i, c, h, w in [(0, 0, 0, 0), (1, 2, 5, 7), (4, 1, 31, 0), (3, 0, 0, 31)]:
        assert x[i, c, h, w] == matlab_x[h, w, c, i]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 9, 0, 5]
    fake.write_svhn_mat(tmp_path / "w.mat", x, y[:, 0])
    x2, labels2 = parsers.read_svhn_mat(tmp_path / "w.mat")
    assert np.array_equal(x2, x) and labels2.tolist() == labels.tolist()


def test_svhn_parser_rejects_bad_labels(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "s.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DataFormatError, match="1..10"):
        parsers.read_svhn_mat(tmp_path / "s.mat")


# --------------------------------------------------------------------------------------------------------- Tolstoi
def test_delete_lines_matches_sed(tmp_path: Path) -> None:
    if shutil.which("sed") is None:
        pytest.skip("sed not available")
    lines = [f"line {i}{' é' if i % 7 == 0 else ''}{chr(13) if i % 5 == 0 else ''}\n" for i in range(1, 65_001)]
    raw = "".join(lines).encode() + b"no final newline"
    path = tmp_path / "w.txt"
    path.write_bytes(raw)
    for first, last in sources.TOLSTOI_DELETIONS:
        subprocess.run(["sed", "-i", f"{first},{last}d", str(path)], check=True)
    assert parsers.delete_lines(raw, sources.TOLSTOI_DELETIONS) == path.read_bytes()


def test_vocabulary_by_frequency_then_first_occurrence() -> None:
    text = "abracadabra!\n"
    vocab = parsers.char_vocabulary(text)
    # a:5, b:2, r:2, then c,d,!,\n once each; ties in order of first appearance
    assert vocab == ["a", "b", "r", "c", "d", "!", "\n"]
    counts = collections.Counter(text)
    assert vocab == [c for c, _ in sorted(counts.items(), key=lambda kv: -kv[1])]
    assert parsers.encode_chars(text, vocab).tolist() == [vocab.index(c) for c in text]
    assert parsers.decode_text(b"a\r\nb\rc\n") == "a\r\nb\rc\n"  # codecs.open: binary mode, no translation
    assert parsers.decode_text(b"a\r\nb\rc\n", newlines="universal") == "a\nb\nc\n"


def test_tolstoi_split_80_20_and_valid_head(tmp_path: Path) -> None:
    splits = datasets.load("tolstoi", tmp_path, size="smoke")
    raw = (tmp_path / "smoke" / "tolstoi" / "raw" / "war-and-peace.txt").read_bytes()
    text = b"".join(raw.splitlines(keepends=True)[3:]).decode("utf-8")  # fake 3-line header removed, bytes kept
    assert len(text) == 20_003 and "\r\n" in text
    vocab = [c for c, _ in sorted(collections.Counter(text).items(), key=lambda kv: -kv[1])]
    ids = np.array([vocab.index(c) for c in text])
    train_file, test = ids[:16_003], ids[16_003:]  # ceil(0.8 · 20 003) = 16 003
    assert splits["valid"][1] is None and splits["train"][0].dtype == torch.int64
    assert splits["test"][0].tolist() == test.tolist()
    assert splits["valid"][0].tolist() == train_file[:4_000].tolist()
    assert splits["train"][0].tolist() == train_file[4_000:].tolist()
    assert (len(splits["train"][0]) - 1) // 2500 >= 3  # >= 3 batches of 50 streams x 50 chars


def test_tolstoi_full_size_check_rejects_wrong_text(tmp_path: Path) -> None:
    datasets.load("tolstoi", tmp_path, size="smoke")
    with pytest.raises(DataFormatError, match="vocabulary"):
        build.build_tolstoi(tmp_path / "smoke" / "tolstoi" / "raw", build.FULL["tolstoi"], full=True)


# ---------------------------------------------------------------------------------------------------------- splits
def test_full_layouts_match_the_spec() -> None:
    expected = {  # (train, valid, test) of §1.9
        "mnist": (50_000, 10_000, 10_000), "fmnist": (50_000, 10_000, 10_000), "cifar10": (40_000, 10_000, 10_000),
        "cifar100": (40_000, 10_000, 10_000), "svhn": (47_225, 26_032, 26_032)}
    for name, (train, valid, test) in expected.items():
        lay = build.FULL[name]
        assert (lay.train_file - lay.valid, lay.valid, lay.test) == (train, valid, test)
    assert (build.FULL["tolstoi"].valid, build.FULL["tolstoi"].test) == (653_237, 653_237)
    for lay in (*build.FULL.values(), *build.SMOKE.values()):  # the training files hold the training file's records
        if lay.train_file is not None:
            assert sum(lay.file_sizes()) == lay.train_file
    assert len(build.SMOKE["svhn"].file_sizes()) == 5 and build.SMOKE["svhn"].file_sizes()[-1] < 160


SMOKE_BATCH = {"mnist": 64, "fmnist": 128, "cifar10": 128, "cifar100": 256, "svhn": 128}


@pytest.mark.parametrize("name", ["mnist", "fmnist", "cifar100", "svhn"])
def test_head_of_training_file_is_validation(tmp_path: Path, name: str) -> None:
    splits = datasets.load(name, tmp_path, size="smoke")
    raw = tmp_path / "smoke" / name / "raw"
    if name in ("mnist", "fmnist"):
        with gzip.open(raw / "train-images-idx3-ubyte.gz") as f:
            file_x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    elif name == "cifar100":  # DeepOBS's reading by default: tf.slice(record, [1], [3072]) of each 3074-byte record
        data = tarfile.open(raw / "cifar-100-binary.tar.gz").extractfile("cifar-100-binary/train.bin").read()
        file_x = np.frombuffer(data, np.uint8).reshape(-1, 3074)[:, 1:3073].reshape(-1, 3, 32, 32)
    else:
        file_x = scipy.io.loadmat(raw / "train_32x32.mat")["X"].transpose(3, 2, 0, 1)
    lay = build.SMOKE[name]
    assert len(file_x) == lay.train_file
    assert torch.equal(splits["valid"][0], torch.from_numpy(file_x[:lay.valid].copy()))
    assert torch.equal(splits["train"][0], torch.from_numpy(file_x[lay.valid:].copy()))
    for split, (x, y) in splits.items():
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and x.is_contiguous() and len(x) == len(y)
        assert len(x) // SMOKE_BATCH[name] >= (3 if split == "train" else 1)
    assert int(splits["train"][1].max()) == (99 if name == "cifar100" else 9)


def test_cifar10_valid_is_data_batch_1(tmp_path: Path) -> None:
    splits = datasets.load("cifar10", tmp_path, size="smoke")
    archive = tarfile.open(tmp_path / "smoke" / "cifar10" / "raw" / "cifar-10-binary.tar.gz")

    def member(name: str) -> np.ndarray:
        return np.frombuffer(archive.extractfile(f"cifar-10-batches-bin/{name}.bin").read(), np.uint8).reshape(-1, 3073)

    assert torch.equal(splits["valid"][1], torch.from_numpy(member("data_batch_1")[:, 0].astype(np.int64)))
    train = np.concatenate([member(f"data_batch_{i}") for i in (2, 3, 4, 5)])
    assert torch.equal(splits["train"][0], torch.from_numpy(train[:, 1:].reshape(-1, 3, 32, 32).copy()))
    assert torch.equal(splits["test"][0], torch.from_numpy(member("test_batch")[:, 1:].reshape(-1, 3, 32, 32).copy()))
    assert len(splits["train"][0]) // 128 >= 3


def test_full_size_count_mismatch_is_rejected(tmp_path: Path) -> None:
    datasets.load("mnist", tmp_path, size="smoke")
    with pytest.raises(DataFormatError, match="60000"):
        build.build("mnist", tmp_path / "smoke" / "mnist" / "raw", "full")


def test_cifar100_offset_bug_option_through_load(tmp_path: Path) -> None:
    good = datasets.load("cifar100", tmp_path, size="smoke", cifar100_offset_bug=False)
    bug = datasets.load("cifar100", tmp_path, size="smoke")  # the default: DeepOBS's shifted reading
    assert torch.equal(bug["train"][0].flatten(1)[:, 0], good["train"][1].to(torch.uint8))
    assert torch.equal(bug["train"][0].flatten(1)[:, 1:], good["train"][0].flatten(1)[:, :-1])
    assert len(list((tmp_path / "smoke" / "cifar100" / "cache").glob("*.pt"))) == 2  # separate caches
    with pytest.raises(ValueError, match="cifar100_offset_bug"):
        datasets.load("mnist", tmp_path, size="smoke", cifar100_offset_bug=True)
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load("imagenet", tmp_path)


# ----------------------------------------------------------------------------------------------------------- cache
def test_cache_is_reused_without_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = datasets.load("svhn", tmp_path, size="smoke")

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("parsed again")

    monkeypatch.setattr(parsers, "read_svhn_mat", boom)
    monkeypatch.setattr(fake, "generate", boom)
    second = datasets.load("svhn", tmp_path, size="smoke")
    assert all(torch.equal(first[s][0], second[s][0]) and torch.equal(first[s][1], second[s][1]) for s in first)


def test_unreadable_cache_is_rebuilt(tmp_path: Path) -> None:
    first = datasets.load("mnist", tmp_path, size="smoke")
    (path,) = (tmp_path / "smoke" / "mnist" / "cache").glob("*.pt")
    path.write_bytes(b"garbage")
    again = datasets.load("mnist", tmp_path, size="smoke")
    assert torch.equal(first["test"][0], again["test"][0])
    assert cache.read(path) is not None


def test_data_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALLEY_DATA", str(tmp_path / "env"))
    assert datasets.resolve_data_dir(None) == tmp_path / "env"
    assert datasets.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("VALLEY_DATA")
    assert datasets.resolve_data_dir(None) == Path("~/.cache/valley").expanduser()
    monkeypatch.setenv("VALLEY_DATA", str(tmp_path / "env"))
    datasets.load("fmnist", None, size="smoke")
    assert (tmp_path / "env" / "smoke" / "fmnist" / "cache").is_dir()


# ------------------------------------------------------------------------------------ checksums, offline, download
def _smoke_as_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Smoke MNIST files placed as the *full* data set, with sources/layout pointing at them."""
    datasets.load("mnist", tmp_path, size="smoke")
    raw = tmp_path / "mnist" / "raw"
    shutil.copytree(tmp_path / "smoke" / "mnist" / "raw", raw)
    remotes = tuple(RemoteFile(r.name, r.urls, _md5((raw / r.name).read_bytes())) for r in sources.SOURCES["mnist"])
    monkeypatch.setitem(sources.SOURCES, "mnist", remotes)
    monkeypatch.setitem(build.FULL, "mnist", build.SMOKE["mnist"])
    return raw


def test_corrupted_file_is_detected_and_never_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _smoke_as_full(tmp_path, monkeypatch)
    target = raw / "train-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setattr(parsers, "read_idx", lambda *_: pytest.fail("parsed a corrupted file"))
    with pytest.raises(ChecksumError, match=str(target)):
        datasets.load("mnist", tmp_path)
    assert not list((tmp_path / "mnist").glob("cache/*.pt"))


def test_verified_full_path_builds_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _smoke_as_full(tmp_path, monkeypatch)
    monkeypatch.setattr(download, "fetch", lambda *_, **__: pytest.fail("no download needed"))
    splits = datasets.load("mnist", tmp_path)
    assert torch.equal(splits["train"][0], datasets.load("mnist", tmp_path, size="smoke")["train"][0])


def test_missing_file_offline_names_file_url_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def offline(url: str, part: Path, **_: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(download, "fetch", offline)
    with pytest.raises(DataMissingError) as info:
        datasets.load("cifar10", tmp_path)
    message = str(info.value)
    expected_path = tmp_path / "cifar10" / "raw" / "cifar-10-binary.tar.gz"
    assert "cifar-10-binary.tar.gz" in message and sources.SOURCES["cifar10"][0].urls[0] in message
    assert str(expected_path) in message and "\n" not in message
    assert len(calls) == 3  # retried
    with pytest.raises(DataMissingError, match="downloads disabled"):
        datasets.load("cifar10", tmp_path, download=False)
    assert len(calls) == 3


def test_unconfirmed_md5_falls_back_to_structure_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets.load("cifar100", tmp_path, size="smoke")
    archive = tmp_path / "smoke" / "cifar100" / "raw" / "cifar-100-binary.tar.gz"
    monkeypatch.setitem(download.STRUCTURE_CHECKS, "cifar100_binary",
                        partial(parsers.check_cifar100_archive, n_train=1024, n_test=256))
    remote = RemoteFile(archive.name, ("http://127.0.0.1:9/x",), "0" * 32, md5_confirmed=False,
                        structure="cifar100_binary")
    assert "UNCONFIRMED" in download.verify(remote, archive)
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:-5000])
    with pytest.raises(ChecksumError, match="t.tar.gz"):
        download.verify(remote, truncated)
    confirmed = RemoteFile(archive.name, remote.urls, "0" * 32)
    with pytest.raises(ChecksumError, match="corrupted or truncated"):
        download.verify(confirmed, archive)


class _RangeServer:
    """A local HTTP server with Range support; ``truncate_first`` makes the first response stop half-way."""

    def __init__(self, payload: bytes, honour_range: bool = True, truncate_first: bool = False) -> None:
        self.payload, self.honour_range, self.truncate_first = payload, honour_range, truncate_first
        self.ranges: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                header = self.headers.get("Range")
                owner.ranges.append(header)
                start = int(header.split("=")[1].rstrip("-")) if header and owner.honour_range else 0
                body = owner.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(owner.payload) - 1}/{len(owner.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.truncate_first:
                    owner.truncate_first = False
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/file.bin"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "_RangeServer":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


PAYLOAD = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def test_partial_download_is_resumed_with_range(tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"
    dest.with_name("file.bin.part").write_bytes(PAYLOAD[:123_456])
    with _RangeServer(PAYLOAD) as server:
        remote = RemoteFile("file.bin", (server.url,), _md5(PAYLOAD))
        assert download.download(remote, dest) == "md5 ok"
    assert server.ranges == ["bytes=123456-"]
    assert dest.read_bytes() == PAYLOAD and not dest.with_name("file.bin.part").exists()


def test_interrupted_download_resumes_on_retry(tmp_path: Path) -> None:
    with _RangeServer(PAYLOAD, truncate_first=True) as server:
        download.download(RemoteFile("f.bin", (server.url,), _md5(PAYLOAD)), tmp_path / "f.bin")
    assert server.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path) -> None:
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes")
    with _RangeServer(PAYLOAD, honour_range=False) as server:
        download.download(RemoteFile("f.bin", (server.url,), _md5(PAYLOAD)), tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_corrupt_download_is_never_placed(tmp_path: Path) -> None:
    with _RangeServer(PAYLOAD) as server:
        with pytest.raises(ChecksumError, match="f.bin"):
            download.download(RemoteFile("f.bin", (server.url,), _md5(b"something else")), tmp_path / "f.bin")
    assert len(server.ranges) == 3  # each attempt restarted from scratch
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


# ------------------------------------------------------------------------------------------------------------- CLI
def test_cli_download_status_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--data-dir", str(tmp_path)]
    assert data_cli.main([*base, "--size", "smoke", "download", "mnist"]) == 0
    assert "mnist: ready (train 512, valid 256, test 256)" in capsys.readouterr().out
    assert data_cli.main([*base, "--size", "smoke", "status", "mnist"]) == 0
    assert data_cli.main([*base, "status", "svhn"]) == 1
    assert "missing (from http://ufldl.stanford.edu/housenumbers/train_32x32.mat)" in capsys.readouterr().out
    monkeypatch.setattr(download, "fetch", partial(_raise, urllib.error.URLError("offline")))
    assert data_cli.main([*base, "download", "tolstoi"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "war-and-peace.txt" in errors[0] and sources.TOLSTOI_URL in errors[0]
    with pytest.raises(SystemExit) as exit_info:
        data_cli.main([*base, "download", "imagenet"])
    assert exit_info.value.code == 2


def _raise(err: Exception, *_: object, **__: object) -> None:
    raise err
