"""The launcher's figures on a running cluster (``bash slurm/local_up.sh``): how long ``valley -m … launcher=slurm``
takes to return, a small P1 sweep end to end through SLURM against ``launcher=inline`` (the overhead ratio), and the
round trip of ``scontrol requeue`` on a running task. Prints JSON lines; results under ``$VALLEY_MEASURE_DIR``
(default /tmp/valley-measure). Run from the checkout: ``python slurm/measure.py``."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.test_launch_helpers import sweep_dir, units_of, valley, wait_finished  # noqa: E402

base = Path(os.environ.get("VALLEY_MEASURE_DIR", "/tmp/valley-measure")); shutil.rmtree(base, ignore_errors=True); base.mkdir(parents=True)
SWEEP = ["-m", "optimizer=adam,sgd", "schedule=constant,cosine", "budget=oneshot,small", "engine=auto", "threads=1",
         "progress=false"]
t0 = time.monotonic(); out = valley(*SWEEP, f"results_dir={base/'inline'}", "tuning.workers=2"); t_inline = time.monotonic() - t0
assert out.returncode == 0, out.stderr
t0 = time.monotonic(); out = valley(*SWEEP, f"results_dir={base/'slurm'}", "launcher=slurm", "launcher.max_running=2")
t_submit = time.monotonic() - t0
assert out.returncode == 0, out.stderr
print(out.stderr.strip().splitlines()[-6:])
rep = wait_finished(base / "slurm", timeout=1200); t_slurm = time.monotonic() - t0
print(json.dumps({"inline_s": round(t_inline, 1), "submit_return_s": round(t_submit, 2), "slurm_end_to_end_s": round(t_slurm, 1),
                  "ratio": round(t_slurm / t_inline, 2), "runs": rep["runs"], "cells": rep["cells"]}))
# requeue round-trip: a long run, requeued once it runs
LONG = ["-m", "optimizer=adam", "budget=oneshot", "tuning.seeds=[42]", "problem.num_epochs=3000", "engine=single",
        "checkpoint.every_epochs=50", "threads=1", "progress=false"]
out = valley(*LONG, f"results_dir={base/'long'}", "launcher=slurm")
assert out.returncode == 0, out.stderr
def state(job):
    o = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.split()
    return o[0] if o else None
job = None
while job is None:
    us = [u for u in units_of(base / "long") if u.get("job") and u["kind"] != "finalize"]
    job = us[0]["job"] if us else None; time.sleep(0.5)
while state(job) != "RUNNING": time.sleep(0.2)
time.sleep(3)
t0 = time.monotonic(); subprocess.run(["scontrol", "requeue", job], check=True)
seen_other = False
while True:
    s = state(job)
    if s != "RUNNING": seen_other = True
    if seen_other and s == "RUNNING": break
    time.sleep(0.2)
print(json.dumps({"requeue_round_trip_s": round(time.monotonic() - t0, 1)}))
subprocess.run([str(Path(sys.executable).with_name("valley-cancel")), str(sweep_dir(base / "long"))])
