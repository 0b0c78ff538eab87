"""Trial bookkeeping in batches: claim many samples of a study at once, finish them at once, beat for all of them.

A cohort trains thousands of trials together, and a journal write is one lock + append + fsync (~4 ms here), a
database write one transaction (~30 ms): one Optuna call per trial attribute would cost minutes for the P1 row. So
the cohort path writes a study's operations as one batch. For the journal storage a batch is one append of several
records in Optuna's own journal format (what ``JournalStorage._write_log`` writes, one record per operation), then
one replay; a database storage gets the operations one by one through the public API. The batch records carry a
worker id of their own, so an operation that lost a race (a trial finished by someone else meanwhile) is skipped
on replay like another worker's, never raised half-way through a batch. Written against optuna 5.0's journal
(pinned; ``tests/test_tuning_batch.py`` replays every kind of record through a fresh storage).

Claims: a sample without a live or final trial gets a new RUNNING trial carrying its values, its run_id, the
claimer's identity and a claim token; a sample that has a WAITING trial (enqueued for pop-based workers) is claimed
by Optuna's atomic WAITING → RUNNING transition. Two claimers of the same sample at the same moment both see both
trials afterwards: the lower trial number keeps the sample and the other is failed as a duplicate.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial, TrialState

LIVE = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)

_CREATE_TRIAL, _SET_STATE, _SET_USER_ATTR = 4, 6, 8  # optuna.storages.journal._storage.JournalOperation


@dataclass(frozen=True)
class Create:
    params: Mapping[str, Any]
    distributions: Mapping[str, BaseDistribution]
    user_attrs: Mapping[str, Any]


@dataclass(frozen=True)
class State:
    trial_id: int
    state: TrialState
    value: float | None = None


@dataclass(frozen=True)
class Attr:
    trial_id: int
    key: str
    value: Any


Op = Create | State | Attr


def _now() -> str:
    return datetime.now(tz=timezone.utc).isoformat(timespec="microseconds")


def write(study: optuna.Study, ops: Iterable[Op]) -> None:
    """Apply ``ops`` to the study's storage: one journal append, or one call each for other storages."""
    ops = list(ops)
    if not ops:
        return
    storage: BaseStorage = study._storage
    study_id = study._study_id
    if isinstance(storage, JournalStorage):
        worker = f"valley-batch-{uuid.uuid4().hex}"
        logs = [_journal_log(op, study_id, worker) for op in ops]
        with storage._thread_lock:
            storage._backend.append_logs(logs)
            storage._sync_with_backend()
        return
    for op in ops:
        try:
            if isinstance(op, Create):
                template = optuna.trial.create_trial(state=TrialState.RUNNING, params=dict(op.params),
                                                     distributions=dict(op.distributions),
                                                     user_attrs=dict(op.user_attrs))
                storage.create_new_trial(study_id, template_trial=template)
            elif isinstance(op, State):
                storage.set_trial_state_values(op.trial_id, op.state,
                                               None if op.value is None else [op.value])
            else:
                storage.set_trial_user_attr(op.trial_id, op.key, op.value)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            continue  # finished by someone else meanwhile (a stale sweep): as the journal replay skips it


def _journal_log(op: Op, study_id: int, worker: str) -> dict[str, Any]:
    if isinstance(op, Create):
        return {"op_code": _CREATE_TRIAL, "worker_id": worker, "study_id": study_id, "datetime_start": _now(),
                "state": int(TrialState.RUNNING), "value": None, "values": None,
                "distributions": {k: distribution_to_json(d) for k, d in op.distributions.items()},
                "params": {k: op.distributions[k].to_internal_repr(v) for k, v in op.params.items()},
                "user_attrs": dict(op.user_attrs), "system_attrs": {}, "intermediate_values": {}}
    if isinstance(op, State):
        log = {"op_code": _SET_STATE, "worker_id": worker, "trial_id": op.trial_id, "state": int(op.state),
               "values": None if op.value is None else [op.value]}
        if op.state == TrialState.RUNNING:
            log["datetime_start"] = _now()
        elif op.state.is_finished():
            log["datetime_complete"] = _now()
        return log
    return {"op_code": _SET_USER_ATTR, "worker_id": worker, "trial_id": op.trial_id, "user_attr": {op.key: op.value}}


def sample_of(t: FrozenTrial) -> int | None:
    s = t.user_attrs.get("sample")
    return int(s) if s is not None else None


def claim(study: optuna.Study, wanted: Mapping[int, tuple[Mapping[str, Any], str]],
          distributions: Mapping[str, BaseDistribution], owner: Mapping[str, Any]) -> dict[int, FrozenTrial]:
    """Claim the samples of ``wanted`` (sample → (params, run_id)) that nobody holds; return sample → our trial.

    The caller has already failed stale trials and left out samples that are final or held by a live owner.
    """
    if not wanted:
        return {}
    token = uuid.uuid4().hex
    now = time.time()
    groups: dict[int, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        s = sample_of(t)
        if s is not None:
            groups.setdefault(s, []).append(t)
    base = {"worker": dict(owner), "heartbeat": now, "claim": token}
    creates, waiting_claimed = [], []
    for s, (params, run_id) in wanted.items():
        waiting = [t for t in groups.get(s, []) if t.state == TrialState.WAITING]
        got = None
        for t in waiting:  # enqueued for pop-based workers: take it with Optuna's atomic transition
            try:
                if study._storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                    got = t
                    break
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        if got is not None:
            waiting_claimed.append((got, run_id))
        else:
            creates.append(Create(params, distributions, {"sample": s, "run_id": run_id, **base}))
    write(study, creates + [Attr(t._trial_id, k, v) for t, run_id in waiting_claimed
                            for k, v in {"run_id": run_id, **base}.items()])
    trials = study.get_trials(deepcopy=False)
    mine = {sample_of(t): t for t in trials if t.user_attrs.get("claim") == token and t.state == TrialState.RUNNING}
    duplicates = []
    for s, t in list(mine.items()):
        rivals = [o for o in trials if sample_of(o) == s and o.number < t.number and o.state in LIVE]
        if rivals:
            duplicates += [Attr(t._trial_id, "duplicate", True), State(t._trial_id, TrialState.FAIL)]
            del mine[s]
    write(study, duplicates)
    return dict(mine)


class Heartbeat:
    """While the claimed trials train, one batch every ``interval`` s refreshes their ``heartbeat`` attribute (what
    another machine reads to tell a live owner from a dead one)."""

    def __init__(self, claimed: Iterable[tuple[optuna.Study, Iterable[FrozenTrial]]], interval: float) -> None:
        self._claimed = [(study, [t._trial_id for t in trials]) for study, trials in claimed]
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        if any(ids for _, ids in self._claimed):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.time()
            for study, ids in self._claimed:
                try:
                    write(study, [Attr(i, "heartbeat", now) for i in ids])
                except Exception:  # noqa: BLE001 - a storage hiccup: the next beat retries
                    continue
