"""The benchmark scripts run end to end (no timing is asserted): ``make bench-gpu --smoke`` on the CPU, and the
pieces of ``make bench``."""
from __future__ import annotations

import json
from pathlib import Path

from bench import benchmark, gpu_benchmark


def test_bench_gpu_smoke_runs_on_the_cpu_and_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "bench_gpu.json"
    gpu_benchmark.main(["--smoke", "--out", str(out), "--data-dir", str(tmp_path / "data"), "--device", "cpu"])
    report = json.loads(out.read_text())
    env = report["environment"]
    assert env["torch"] and env["tf32_under_fp32"] == {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False}
    assert env["tf32_under_tf32"] == {"cuda.matmul.allow_tf32": True, "cudnn.allow_tf32": True}
    for precision in ("fp32", "tf32"):
        image = report["cifar10_3c3d"][precision]
        assert {"single", "cohort_M1", "cohort_M2", "parity"} <= set(image)
        assert image["cohort_M2"]["trial_steps_per_s"] > 0 and image["single"]["tflops"] > 0
        assert all(v["params"] < 1e-4 for v in image["parity"].values())  # vmap program vs single run
    assert {"cohort", "cohort_fast"} <= set(report["p1"]) and report["p1"]["cohort"]["trials"] == 64
    lstm = report["tolstoi_char_rnn"]
    assert "batched_M2" in lstm and all(v["params"] < 1e-4 for v in lstm["parity"].values())


def test_make_bench_specs_and_flops() -> None:
    specs = benchmark.p1_specs(70)
    assert len(specs) == 70 and len({s.run_id for s in specs}) == 70
    assert {s.optimizer for s in specs[:64]} == set(benchmark.STUDY) and specs[0].schedule == "constant"
    fast = benchmark.p1_specs(3, arithmetic="reordered")
    assert all(s.arithmetic == "reordered" for s in fast)
    # P1's single run: 700 steps x (forward + backward mm) + 101 evaluations x 3 splits x 896 rows, 2·100² each
    flops = benchmark.model_flops(specs[0], "cpu", None)
    assert flops == 2 * 128 * 100 * 100 * 2 * 700 + 2 * 896 * 100 * 100 * 3 * 101
