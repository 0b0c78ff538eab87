"""logger=wandb end to end, as a user runs ``valley`` (subprocesses, offline, CPU, no network):

* a multirun with ``logger=wandb logger.mode=offline`` writes exactly one offline W&B run per run_id whose config,
  history and summary read back (``wandb leet inspect``) equal the Parquet rows, NaN-aware;
* ``logger=none`` never imports wandb; ``logger.mode=disabled`` writes nothing and imports nothing;
* online mode against an unreachable server (a closed port; a server that accepts and never answers; one that
  answers the probe but hangs on init) finishes within init-timeout + a few seconds, with one warning line and the
  data kept offline;
* a canary W&B API key and a canary database password appear in no file under results_dir and in no output
  (single run and multirun; ``scan_for_canary`` from tests/test_secrets.py is the reusable check);
* SIGKILL mid-sweep: every Parquet file stays readable, the W&B writer process finishes the run in flight, export
  re-creates what is missing, a re-run resumes and every W&B run equals its record.
"""
from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench import records
from bench.loggers import payload
from bench.loggers.wandb_export import compare_run, curves_of, plan_export, read_rows
from bench.loggers.wandb_read import read_many, read_run, run_dirs
from tests.test_secrets import CANARY_API_KEY, CANARY_PASSWORD, SilentServer, scan_for_canary

pytest.importorskip("wandb")
ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import atexit, sys
def report():
    m = sys.modules.get("bench.loggers.wandb")
    print("VALLEY-PROBE", "wandb" in sys.modules, m is not None and m._CLIENT is not None, flush=True)
atexit.register(report)
sys.argv = ["valley", *sys.argv[1:]]
from bench.cli import main
main()
"""


def env_for(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", WANDB_MODE="offline", WANDB_API_KEY=CANARY_API_KEY)
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def valley(*args: str, env: dict[str, str] | None = None, timeout: float = 300, probe: bool = False
           ) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-c", PROBE, *args] if probe else [sys.executable, "-m", "bench.cli", *args]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, env=env or env_for(), capture_output=True, text=True, timeout=timeout)
    return out, time.monotonic() - t0


def offline_runs(results: Path) -> dict[str, list[Path]]:
    return run_dirs(results / "wandb", include_online=False)


def assert_wandb_equals_parquet(results: Path, expect: int | None = None) -> dict[str, dict]:
    """Every record's latest offline W&B run reads back equal to its Parquet row and curves; returns them."""
    rows = {r["run_id"]: r for r in read_rows(results, "runs", records.RUNS_SCHEMA)}
    dirs = offline_runs(results)
    if expect is not None:
        assert len(rows) == expect
    assert set(rows) <= set(dirs), f"records without a W&B run: {sorted(set(rows) - set(dirs))}"
    curves = curves_of(results, list(rows))
    folded = dict(zip(rows, read_many([dirs[r][-1] for r in rows])))
    for rid, rec in rows.items():
        assert compare_run(folded[rid], rec, curves[rid]) == [], rid
    return folded


def test_multirun_offline_one_run_per_run_id_equal_to_parquet_and_no_canary(tmp_path) -> None:
    results = tmp_path / "r"
    storage = f"tuning.storage=postgresql://valley:{CANARY_PASSWORD}@127.0.0.1:{_closed_port()}/study"
    out, _ = valley("-m", "optimizer=adam,sgd", "seed=42,43", "problem.num_epochs=4", "logger=wandb",
                    "logger.mode=offline", "logger.tags=[e2e]", storage, f"results_dir={results}", "progress=false")
    assert out.returncode == 0, out.stderr
    dirs = offline_runs(results)
    runs = read_rows(results, "runs", records.RUNS_SCHEMA)
    assert len(runs) == 4 and sorted(dirs) == sorted(r["run_id"] for r in runs)
    assert all(len(d) == 1 for d in dirs.values())  # exactly one offline run per run_id
    folded = assert_wandb_equals_parquet(results, expect=4)
    for run in folded.values():
        assert run["tags"] == ["e2e", "role:single", "source:valley"] and run["exit_code"] == 0
        assert len(run["history"]) == 5
    assert not (results / ".hydra").exists()  # sweeps run their jobs themselves: no multirun.yaml to leak into
    assert scan_for_canary(CANARY_PASSWORD, results, [out.stdout, out.stderr]) == []
    assert scan_for_canary(CANARY_API_KEY, results, [out.stdout, out.stderr]) == []
    assert "password on the command line" in out.stderr  # the one warning line
    # The live runs are in the ledger with their content: an export writes nothing.
    assert plan_export(results, results / "wandb", extra_tags=["e2e"]).items == []


def test_single_run_no_canary_anywhere(tmp_path) -> None:
    results = tmp_path / "r"
    out, _ = valley("optimizer=adam", "problem.num_epochs=3", "logger=wandb",
                    f"tuning.storage=postgresql://u:{CANARY_PASSWORD}@db.invalid/x", f"results_dir={results}")
    assert out.returncode == 0, out.stderr
    assert len(offline_runs(results)) == 1
    assert_wandb_equals_parquet(results, expect=1)
    for canary in (CANARY_PASSWORD, CANARY_API_KEY):
        assert scan_for_canary(canary, results, [out.stdout, out.stderr]) == []


def test_logger_none_never_imports_wandb_and_disabled_writes_nothing(tmp_path) -> None:
    out, _ = valley("optimizer=adam", "problem.num_epochs=2", f"results_dir={tmp_path / 'a'}", probe=True)
    assert out.returncode == 0, out.stderr
    assert "VALLEY-PROBE False False" in out.stdout
    out, _ = valley("optimizer=adam", "problem.num_epochs=2", "logger=wandb", "logger.mode=disabled",
                    f"results_dir={tmp_path / 'b'}", probe=True)
    assert out.returncode == 0, out.stderr
    assert "VALLEY-PROBE False False" in out.stdout and not (tmp_path / "b" / "wandb").exists()
    assert (tmp_path / "b" / "runs").is_dir()
    out, _ = valley("optimizer=adam", "problem.num_epochs=2", "logger=wandb", f"results_dir={tmp_path / 'c'}",
                    probe=True)
    # offline: the training process itself never imports wandb either (its writer process does)
    assert out.returncode == 0 and "VALLEY-PROBE False True" in out.stdout, out.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProbeOkInitHangs:
    """Answers GET /healthz (the probe passes), never answers POST /graphql in time (wandb.init times out)."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def do_POST(self) -> None:  # noqa: N802
                time.sleep(120)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_after_run(results: Path, ended: datetime) -> float:
    """Seconds from the end of training (the record's finished_at) to the end of the process."""
    rec = read_rows(results, "runs", records.RUNS_SCHEMA)[0]
    return (ended - rec["finished_at"]).total_seconds()


@pytest.fixture(scope="module")
def offline_wait(tmp_path_factory) -> float:
    """The same run with logger.mode=offline: what the writer process costs after a short run on this machine
    (its start-up, wandb-core's, the exit drain), so that online mode is judged by what it adds."""
    results = tmp_path_factory.mktemp("offline") / "r"
    out, _ = valley("optimizer=adam", "problem.num_epochs=3", "logger=wandb", "logger.mode=offline",
                    f"results_dir={results}", "progress=false")
    assert out.returncode == 0, out.stderr
    return _wait_after_run(results, datetime.now(timezone.utc))


@pytest.mark.parametrize("server", ["refused", "silent", "init_hangs"])
def test_online_against_an_unreachable_server_finishes_fast_and_keeps_the_data_offline(tmp_path, server,
                                                                                       offline_wait) -> None:
    results = tmp_path / "r"
    srv = {"refused": None, "silent": SilentServer, "init_hangs": ProbeOkInitHangs}[server]
    srv = srv() if srv else None
    port = srv.port if srv else _closed_port()
    init_timeout = 3
    try:
        out, _ = valley("optimizer=adam", "problem.num_epochs=3", "logger=wandb", "logger.mode=online",
                        f"logger.init_timeout_s={init_timeout}", f"results_dir={results}", "progress=false",
                        env=env_for(WANDB_MODE=None, WANDB_BASE_URL=f"http://127.0.0.1:{port}"), timeout=120)
        ended = datetime.now(timezone.utc)
    finally:
        if srv:
            srv.close()
    assert out.returncode == 0, out.stderr
    waited = _wait_after_run(results, ended)
    assert waited < offline_wait + init_timeout + 6, f"waited {waited:.1f} s after the run ({offline_wait:.1f} s offline)"
    warnings = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("valley: warning: W&B online"), out.stderr
    assert "valley-wandb sync" in warnings[0] and "Traceback" not in out.stderr
    assert len(offline_runs(results)) == 1
    assert_wandb_equals_parquet(results, expect=1)
    ledger = list(payload.Ledger(results / "wandb").latest().values())
    assert len(ledger) == 1 and ledger[0]["mode"] == "offline" and not ledger[0]["synced"]
    assert scan_for_canary(CANARY_API_KEY, results, [out.stdout, out.stderr]) == []


def _wait_for(cond, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_sweep_then_export_and_resume(tmp_path) -> None:
    results = tmp_path / "r"
    args = ("-m", "seed=42,43,44,45", "optimizer=adam", "problem.num_epochs=120", "logger=wandb",
            "checkpoint.every_epochs=5", "checkpoint.every_minutes=0", f"results_dir={results}", "progress=false")
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", *args], cwd=ROOT, env=env_for(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    runs_dir, ckpt_dir = results / "runs", results / "checkpoints"

    def two_done_and_a_checkpoint() -> bool:
        done = len(list(runs_dir.glob("*.parquet"))) if runs_dir.is_dir() else 0
        return done >= 2 and ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt"))

    try:
        _wait_for(two_done_and_a_checkpoint, 240, "two records and a checkpoint")
        os.kill(proc.pid, signal.SIGKILL)  # the trainer only: its W&B writer process sees the pipe close
        proc.wait(30)
        _wait_for(lambda: _group_gone(proc.pid), 60, "the W&B writer process to finish and exit")
    finally:
        if not _group_gone(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    for path in [*runs_dir.glob("*.parquet"), *(results / "curves").glob("*.parquet")]:
        pq.read_table(path)  # every visible Parquet file is complete
    rows = {r["run_id"]: r for r in read_rows(results, "runs", records.RUNS_SCHEMA)}
    assert 2 <= len(rows) < 4
    dirs = offline_runs(results)
    in_flight = [rid for rid in dirs if rid not in rows]
    assert len(in_flight) == 1  # the run being trained when the trainer died: finished by the writer process
    partial = read_run(dirs[in_flight[0]][-1])
    assert partial["exit_code"] == 1 and partial["summary"]["status"] == "stopped"
    assert len(partial["history"]) >= 5  # complete up to (and past) its last checkpoint

    # A W&B run lost with its writer (a kill of the whole process group before wandb flushed): export re-creates it.
    lost = sorted(rows)[0]
    for d in dirs[lost]:
        shutil.rmtree(d)
    plan = plan_export(results, results / "wandb")
    assert lost in {item.init["id"] for item in plan.items}
    out = subprocess.run([sys.executable, "-m", "bench.loggers.wandb_export", "export", str(results)], cwd=ROOT,
                         env=env_for(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"{len(plan.items)} W&B runs" in out.stdout or f"wrote {len(plan.items)} of" in out.stdout
    assert_wandb_equals_parquet(results, expect=len(rows))

    again, _ = valley(*args)  # resume: trains only what is missing, the in-flight run from its checkpoint
    assert again.returncode == 0, again.stderr
    final = {r["run_id"]: r for r in read_rows(results, "runs", records.RUNS_SCHEMA)}
    assert len(final) == 4 and final[in_flight[0]]["resumes"] == 1
    folded = assert_wandb_equals_parquet(results, expect=4)
    assert folded[in_flight[0]]["resumed"]
    curves = curves_of(results, in_flight)[in_flight[0]]
    head = {(r["epoch"], k): v for r in partial["history"] for k, v in r.items() if "/" in k}
    assert all(head[(e, f"{s}/{m}")] == v for e, s, m, v in curves if (e, f"{s}/{m}") in head)
    assert plan_export(results, results / "wandb").items == []


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
