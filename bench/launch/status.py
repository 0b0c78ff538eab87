"""``valley-status`` and ``valley-cancel``: follow, retry and cancel the sweeps of a results directory.

``valley-status [results_dir | sweep dir | sweep id]`` prints per sweep its runs (done / running / pending / failed
/ lost, and the re-runs not dispatched yet), its tasks (the same states, requeues), its complete cells, and for each
failed or lost task its error line and log path. It answers from the records, the task markers, one ``squeue`` and
at most one ``sacct`` call, each with a timeout: without accounting (``sacct`` failing or not answering) the ended
tasks are judged by their markers, and without a controller the queue is reported unknown — it never hangs.

``valley-status … --retry failed|lost`` submits just the runs whose last task failed (or vanished: lost), plus
runs recorded as failed for ``failed``, as a new round of the sweep with the submission's code; ``valley-cancel``
cancels every queued or running job of a sweep (the local supervisor for ``local_gpus``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Mapping
from typing import Any

from bench.launch.sweepdir import ACTIVE, SweepDir, UnitState, find_sweep

RUN_STATES = ("done", "running", "pending", "failed", "lost")


def backend_states(sweep: SweepDir, rounds: list[dict[str, Any]], *, accounting: bool = True
                   ) -> tuple[dict[str, UnitState], list[str]]:
    """Every unit's state, and notes about what could not be asked."""
    from bench.launch.local_gpus import LocalBackend
    from bench.launch.slurm import ClusterUnavailable, SlurmBackend

    notes: list[str] = []
    states: dict[str, UnitState] = {}
    kinds = {r.get("backend") for r in rounds}
    if "local" in kinds:
        states.update(LocalBackend().unit_states(sweep))
    if "slurm" in kinds:
        try:
            states.update(SlurmBackend().unit_states(sweep, accounting=accounting))
        except ClusterUnavailable as err:
            notes.append(f"the queue is unknown ({err}): states below are the tasks' own markers")
            for uid, marker in sweep.markers().items():
                st = marker.get("state")
                states[uid] = UnitState("done" if st == "done" else ("failed" if st in ("failed", "stopped")
                                                                    else "lost"),
                                        marker.get("job"), f"marker: {st}", marker.get("error"), marker.get("log"))
    return states, notes


def report(sweep: SweepDir) -> dict[str, Any]:
    """What ``valley-status`` prints for one sweep, as a dict (``--json``)."""
    from bench.launch.work import SweepModel
    from bench.tuning.batch import RecordIndex
    from bench.tuning.cell import read_cells

    rounds = sweep.rounds()
    meta = sweep.meta()
    out: dict[str, Any] = {"sweep": sweep.id, "path": str(sweep.root), "command": meta.get("command"),
                           "rounds": len(rounds), "notes": []}
    if not rounds:
        out["notes"].append("nothing was submitted yet")
        return out
    latest = rounds[-1]
    out["backend"] = latest.get("backend")
    model = SweepModel(sweep.configs(latest["configs"]))
    states, notes = backend_states(sweep, rounds)
    out["notes"] += notes
    if any("accounting" in (s.detail or "") and "off" in (s.detail or "") for s in states.values()):
        out["notes"].append("accounting (sacct) did not answer: ended tasks are judged by their markers")
    units = sweep.units()
    last: dict[str, str] = {}
    phase2_cells: set[str] = set()
    cell_ids_by_key: dict[str, dict[int, str]] = {}

    def cell_ids(key: str) -> dict[int, str]:
        if key not in cell_ids_by_key:
            m = model if key == latest["configs"] else SweepModel(sweep.configs(key))
            cell_ids_by_key[key] = {i: c.cell_id for i, c in m.cells.items()}
        return cell_ids_by_key[key]

    for uid, (unit, rnd) in units.items():
        for r in unit.run_ids:
            last[r] = uid
        if unit.kind == "runs" and unit.phase == 2:
            ids = cell_ids(rnd["configs"])
            phase2_cells |= {ids[i] for i in unit.cells if i in ids}
    runs: dict[str, str] = {}
    index = RecordIndex(model.results_dirs[0])
    for g in range(len(model.groups)):
        for rid in model.phase1(g):
            runs[rid] = ""
    for uid, (unit, _) in units.items():
        for r in unit.run_ids:
            runs[r] = ""
    counts: Counter[str] = Counter()
    for rid in runs:
        rec = index.rows().get(rid)
        if rec is not None and rec["status"] in ("completed", "diverged"):
            counts["done"] += 1
            continue
        uid = last.get(rid)
        st = states.get(uid).state if uid and uid in states else ("lost" if uid else "unsubmitted")
        if rec is not None and rec["status"] == "failed" and st not in ACTIVE:
            st = "failed"
        if st == "done":
            st = "lost"  # its task ended well but the run has no record (held by another sweep's worker?)
        counts[st] += 1
    tuned = [c for i, c in model.cells.items() if c.budget.tuned and model.batchable[i]]
    waiting = sum(len(c.tuning.rerun_seeds) for c in tuned if c.cell_id not in phase2_cells)
    out["runs"] = {k: counts.get(k, 0) for k in (*RUN_STATES, "unsubmitted")}
    out["runs"]["not_dispatched_reruns"] = waiting
    out["runs"]["known"] = len(runs)
    # a failed or lost task whose work was redone since (its runs recorded or held by a later task; a later round's
    # finaliser) is history: counted as retried, not listed
    last_round = max(r["round"] for r in rounds)
    for uid, (unit, rnd) in units.items():
        st = states.get(uid)
        if st is None or st.state not in ("failed", "lost"):
            continue
        if unit.kind == "runs":
            redone = all(index.finished(r) is not None or last.get(r) != uid for r in unit.run_ids)
        elif unit.kind == "finalize":
            redone = rnd["round"] < last_round
        else:
            redone = any(u2.kind == "cell" and r2["round"] > rnd["round"] and u2.cells == unit.cells
                         for u2, r2 in units.values())
        if redone:
            states[uid] = UnitState("retried", st.job, st.detail, st.error, st.log)
    task_counts: Counter[str] = Counter(states[u].state for u in units if u in states)
    out["tasks"] = {k: task_counts.get(k, 0) for k in (*RUN_STATES, "retried")}
    requeues = 0
    for uid in units:
        by_job = Counter(s.get("job") for s in sweep.starts(uid))
        requeues += sum(n - 1 for n in by_job.values())
    out["requeues"] = requeues
    out["failed_tasks"] = [{"unit": uid, "job": st.job, "state": st.state, "detail": st.detail, "error": st.error,
                            "log": st.log} for uid, st in sorted(states.items()) if st.state in ("failed", "lost")]
    cells = read_cells(model.results_dirs[0])
    wanted = {c.cell_id for c in model.cells.values()}
    done_cells = set(cells.loc[cells.status == "complete", "cell_id"]) & wanted if len(cells) else set()
    out["cells"] = {"complete": len(done_cells), "total": len(wanted)}
    out["running_jobs"] = sorted({st.job for st in states.values() if st.state in ACTIVE and st.job})
    if any(st.state == "pending" and "no supervisor running" in st.detail for st in states.values()):
        out["notes"].append(f"no local supervisor runs this sweep: valley-status {sweep.root} --retry lost starts "
                            "one (so does the same valley -m ... command)")
    return out


def print_report(rep: Mapping[str, Any]) -> None:
    print(f"sweep {rep['sweep']} ({rep.get('backend', '?')}, {rep['rounds']} round{'s' if rep['rounds'] != 1 else ''})"
          f": {rep['path']}")
    if rep.get("command"):
        print(f"  command  valley {rep['command']}")
    for note in rep.get("notes", []):
        print(f"  note     {note}")
    if "runs" not in rep:
        return
    r = rep["runs"]
    line = " · ".join(f"{k} {r[k]:,}" for k in RUN_STATES)
    extra = []
    if r.get("unsubmitted"):
        extra.append(f"{r['unsubmitted']:,} not submitted")
    if r.get("not_dispatched_reruns"):
        extra.append(f"up to {r['not_dispatched_reruns']:,} winner re-runs after tuning")
    print(f"  runs     {line}" + (f" (+ {', '.join(extra)})" if extra else ""))
    t = rep["tasks"]
    print("  tasks    " + " · ".join(f"{k} {t[k]:,}" for k in RUN_STATES)
          + (f" · retried {t['retried']:,}" if t.get("retried") else "") + f"; requeues {rep['requeues']}")
    c = rep["cells"]
    print(f"  cells    {c['complete']}/{c['total']} complete")
    for f in rep["failed_tasks"][:20]:
        print(f"  {f['state']:<6}   {f['unit']} (job {f['job']}, {f['detail']}): {f['error'] or '-'}")
        if f.get("log"):
            print(f"           log {f['log']}")
    if len(rep["failed_tasks"]) > 20:
        print(f"  ... and {len(rep['failed_tasks']) - 20} more failed or lost tasks (--json lists all)")
    if rep["failed_tasks"]:
        print(f"  retry    valley-status {rep['path']} --retry failed   (or: --retry lost)")


def retry(sweep: SweepDir, states_wanted: list[str]) -> Any:
    from bench.launch import LaunchError
    from bench.launch import code as code_mod
    from bench.launch.common import say
    from bench.launch.submit import reconcile
    from bench.launch.task import backend_of
    from bench.launch.work import SweepModel

    rounds = sweep.rounds()
    if not rounds:
        raise LaunchError(f"sweep {sweep.id}: nothing was submitted yet")
    latest = rounds[-1]
    code = latest["code"]
    if code["mode"] == "checkout" and code_mod.fingerprint(__import__("pathlib").Path(code["checkout"])) != \
            code["fingerprint"]:
        raise LaunchError(f"the checkout {code['checkout']} changed since sweep {sweep.id} was submitted "
                          "(launcher.code=checkout): restore it, or submit again with valley -m ...")
    if latest["backend"] == "slurm":
        from bench.launch.slurm import check_cluster
        from bench.launch.settings import slurm_settings

        check_cluster(slurm_settings(latest["settings"]), [])
    model = SweepModel(sweep.configs(latest["configs"]))
    backend = backend_of(latest["backend"])
    with sweep.lock():
        summary = reconcile(sweep, model, latest["configs"], backend, mode="retry", retry_states=states_wanted,
                            settings={**latest["settings"], "hold": False}, code=code, say=say,
                            origin=f"--retry {','.join(states_wanted)}")
        if summary.empty:  # nothing to run again: the cells table may still miss what a failed finaliser skipped
            from bench.launch.submit import write_cells

            write_cells(sweep, model)
    if latest["backend"] == "local":
        from bench.launch.local_gpus import ensure_supervisor

        ensure_supervisor(sweep, sweep.rounds()[-1])
    return summary


def _targets(args: argparse.Namespace) -> list[SweepDir]:
    from bench.launch import LaunchError

    found = find_sweep(args.target, args.results_dir)
    if not found:
        raise LaunchError(f"no sweep found for {args.target!r} (a results directory, a sweep directory under "
                          "<results_dir>/sweeps/, or a sweep id with --results-dir)")
    return found


def main(argv: list[str] | None = None) -> None:
    """``valley-status [target] [--retry failed|lost] [--json]``."""
    from bench.launch import LaunchError

    parser = argparse.ArgumentParser(prog="valley-status", description="Follow, and retry, submitted sweeps.")
    parser.add_argument("target", nargs="?", default="results",
                        help="a results directory (all its sweeps), a sweep directory, or a sweep id (prefix)")
    parser.add_argument("--results-dir", default=None, help="where to look up a sweep id (default: results)")
    parser.add_argument("--retry", choices=("failed", "lost", "all"), default=None,
                        help="resubmit the runs whose task failed (or was lost)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        sweeps = _targets(args)
        if args.retry:
            wanted = ["failed", "lost"] if args.retry == "all" else [args.retry]
            for sweep in sweeps:
                summary = retry(sweep, wanted)
                if summary.empty:
                    print(f"sweep {sweep.id}: nothing to retry ({args.retry})")
                else:
                    print(f"sweep {sweep.id}: round {summary.number}: resubmitted {summary.runs} runs"
                          + (f" + {summary.cells} cells" if summary.cells else "")
                          + f" in {summary.tasks} tasks ({', '.join(j['job_id'] for j in summary.jobs)})")
            return
        reports = [report(s) for s in sweeps]
    except LaunchError as err:
        print(f"valley-status: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(reports if len(reports) != 1 else reports[0], indent=1, default=str))
        return
    for rep in reports:
        print_report(rep)


def cancel_main(argv: list[str] | None = None) -> None:
    """``valley-cancel [target]``: cancel every queued or running job of the sweep(s)."""
    from bench.launch import LaunchError
    from bench.launch.local_gpus import LocalBackend
    from bench.launch.slurm import ClusterUnavailable, SlurmBackend

    parser = argparse.ArgumentParser(prog="valley-cancel", description="Cancel a submitted sweep's jobs.")
    parser.add_argument("target", help="a sweep directory, or a sweep id (prefix) with --results-dir, or a results "
                                       "directory (every sweep in it)")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args(argv)
    try:
        sweeps = _targets(args)
        for sweep in sweeps:
            kinds = {r.get("backend") for r in sweep.rounds()}
            done: list[str] = []
            if "slurm" in kinds:
                try:
                    done += [f"job {j}" for j in SlurmBackend().cancel(sweep)]
                except ClusterUnavailable as err:
                    raise LaunchError(f"cannot cancel sweep {sweep.id}: {err}") from None
            if "local" in kinds:
                done += LocalBackend().cancel(sweep)
            print(f"sweep {sweep.id}: cancelled {', '.join(done) if done else 'nothing (no queued or running job)'}")
    except LaunchError as err:
        print(f"valley-cancel: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
