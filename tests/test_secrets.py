"""Secrets never shown or stored: URL redaction, storage passwords from the environment or a file, the command-line
scrub, the one-line reachability check — and :func:`scan_for_canary`, the reusable end-to-end check that a canary
secret appears in no file under a results_dir and in no captured output (used by tests/test_wandb_e2e.py; the
budget/sweep path reuses it after the sweep rework)."""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from bench.secrets import PASSWORD_ENV, check_storage_reachable, redact, scrub_argv, storage_url

CANARY_PASSWORD = "Cnry-pw-7f3a9e!x"
CANARY_API_KEY = "c4n4ry" + "0123456789abcdef" * 2 + "beef"  # 42 chars, never a real key


def scan_for_canary(canary: str, roots: list[Path] | Path = (), outputs: tuple[str, ...] | list[str] = ()
                    ) -> list[str]:
    """Where ``canary`` (or its URL-encoded form) appears: files under ``roots`` (any content, binary included,
    and file names) and captured ``outputs``. An empty list means nowhere."""
    forms = {canary.encode(), quote(canary, safe="").encode(), quote(canary).encode()}
    hits = []
    for i, text in enumerate(outputs):
        data = (text or "").encode(errors="replace")
        if any(f in data for f in forms):
            hits.append(f"output #{i}")
    for root in [roots] if isinstance(roots, Path) else list(roots):
        for path in Path(root).rglob("*"):
            if any(f.decode() in path.name for f in forms):
                hits.append(f"name {path}")
            if path.is_file() and not path.is_symlink():
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                if any(f in data for f in forms):
                    hits.append(str(path))
    return hits


@pytest.mark.parametrize("text, expected", [
    ("postgresql://user:PASSWORD@host/db", "postgresql://user:***@host/db"),
    ("postgresql+psycopg://u:p%40ss@h:5432/db?sslmode=require", "postgresql+psycopg://u:***@h:5432/db?sslmode=require"),
    ("mysql://u:pa@ss@h/db and mail x@y", "mysql://u:***@h/db and mail x@y"),
    ("'tuning.storage=postgresql\\://user\\:PW@127.0.0.1\\:5/db'", "'tuning.storage=postgresql\\://user\\:***@127.0.0.1\\:5/db'"),
    ("host=h password=secret dbname=x", "host=h password=*** dbname=x"),
    ("postgresql://u@h/db?password=abc&x=1", "postgresql://u@h/db?password=***&x=1"),
    ("sqlite:///a.db, postgresql://user@host/db, https://api.wandb.ai", "sqlite:///a.db, postgresql://user@host/db, https://api.wandb.ai"),
])
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_masks_the_env_password_anywhere(monkeypatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, CANARY_PASSWORD)
    assert CANARY_PASSWORD not in redact(f"failed for {CANARY_PASSWORD} ({quote(CANARY_PASSWORD, safe='')})")


def test_storage_url_fills_the_password_in_only_where_the_storage_opens(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    assert storage_url("results/optuna/journal.log") == "results/optuna/journal.log"
    assert storage_url("postgresql://u@h/db") == "postgresql://u@h/db"  # libpq: PGPASSWORD / ~/.pgpass
    assert storage_url("postgresql://u:inline@h/db") == "postgresql://u:inline@h/db"
    monkeypatch.setenv(PASSWORD_ENV, CANARY_PASSWORD)
    assert storage_url("sqlite:///results/optuna.db") == "sqlite:///results/optuna.db"
    url = storage_url("postgresql://u@h:5432/db")
    assert url == f"postgresql://u:{quote(CANARY_PASSWORD, safe='')}@h:5432/db"
    assert redact(url) == "postgresql://u:***@h:5432/db"
    monkeypatch.delenv(PASSWORD_ENV)
    secret = tmp_path / "pw"
    secret.write_text(CANARY_PASSWORD + "\n")
    url = storage_url(f"postgresql://u@h/db?password_file={secret}&sslmode=disable")
    assert url == f"postgresql://u:{quote(CANARY_PASSWORD, safe='')}@h/db?sslmode=disable"
    with pytest.raises(ValueError) as err:
        storage_url(f"postgresql://u@h/db?password_file={tmp_path / 'missing'}")
    assert "cannot read password_file" in str(err.value) and CANARY_PASSWORD not in str(err.value)


def test_scrub_argv_moves_the_password_out_of_the_command_line(monkeypatch, capsys) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "")  # registers the undo: scrub_argv sets the variable itself
    monkeypatch.delenv(PASSWORD_ENV)
    argv = ["-m", "budget=small", f"tuning.storage=postgresql://user:{CANARY_PASSWORD}@127.0.0.1:5432/db", "seed=1"]
    out = scrub_argv(argv)
    assert out == ["-m", "budget=small", "tuning.storage=postgresql://user@127.0.0.1:5432/db", "seed=1"]
    assert os.environ[PASSWORD_ENV] == CANARY_PASSWORD
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and CANARY_PASSWORD not in err
    assert storage_url(out[2].split("=", 1)[1]).startswith("postgresql://user:")
    quoted = scrub_argv([f"tuning.storage='postgresql://u:{CANARY_PASSWORD}@h/db?sslmode=disable'"], warn=False)
    assert quoted == ["tuning.storage='postgresql://u@h/db?sslmode=disable'"]
    assert scrub_argv(["optimizer=adam", "tuning.storage=results/j.log"], warn=False) == \
        ["optimizer=adam", "tuning.storage=results/j.log"]
    with pytest.raises(ValueError):
        scrub_argv(["tuning.storage=postgresql://a:x@h/db,postgresql://a:y@h/db"], warn=False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentServer:
    """A local TCP server that accepts connections and never answers (an unreachable server that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


def test_unreachable_storage_is_one_line_without_the_password(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(PASSWORD_ENV, CANARY_PASSWORD)
    port = _closed_port()
    t0 = time.monotonic()
    line = check_storage_reachable(f"postgresql://user@127.0.0.1:{port}/db", 2)
    assert line and "\n" not in line and f"127.0.0.1:{port}" in line and "refused" in line.lower()
    assert CANARY_PASSWORD not in line and time.monotonic() - t0 < 2
    line = check_storage_reachable(f"postgresql://user:{CANARY_PASSWORD}@127.0.0.1:{port}/db", 2)
    assert line and CANARY_PASSWORD not in line and "user:***@" in line
    server = SilentServer()
    try:
        t0 = time.monotonic()
        line = check_storage_reachable(f"postgresql://user@127.0.0.1:{server.port}/db", 2)
        assert line and "\n" not in line and CANARY_PASSWORD not in line and time.monotonic() - t0 < 8
    finally:
        server.close()
    assert check_storage_reachable(str(tmp_path / "optuna" / "journal.log"), 1) is None
    assert check_storage_reachable(f"sqlite:///{tmp_path}/s.db", 1) is None
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "not a writable directory" in check_storage_reachable(str(blocked / "journal.log"), 1)


def test_scan_for_canary_finds_plain_encoded_and_binary(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "clean.txt").write_text("nothing here")
    assert scan_for_canary(CANARY_PASSWORD, tmp_path, ["ok"]) == []
    (tmp_path / "a" / "x.bin").write_bytes(b"\x00\x01" + quote(CANARY_PASSWORD, safe="").encode() + b"\xff")
    hits = scan_for_canary(CANARY_PASSWORD, tmp_path, ["ok", f"leak {CANARY_PASSWORD}"])
    assert hits == ["output #1", str(tmp_path / "a" / "x.bin")]
