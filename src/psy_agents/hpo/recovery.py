"""Stale trials and their retries: what a trial whose worker died becomes, exactly once.

A trial whose worker sent no heartbeat for the grace period (or, having never sent one,
started more than twice the grace period ago) is *stale*. The next worker that looks fails
it with ``fail_reason`` = :data:`STALE_REASON` and queues one retry of it, which resumes from
the trial's checkpoint (up to ``max_retry`` retries per chain).

Contracts:

- :func:`stale_trial_ids` is the stale-trial query of every storage that
  :func:`psy_agents.hpo.connect.open_storage` opens; it writes the ``fail_reason`` before
  Optuna fails the trial.
- :func:`retry_callback` queues at most one retry per failed trial, across workers and hosts,
  while the database stays up (:func:`retry_lock`); :func:`duplicate_of` names a second one
  that a database restart inside the lock let through.
- :func:`requeue_orphans` repairs a stale FAIL whose retry was never queued. Idempotent.

Optuna is imported inside the functions; Optuna's private API goes through
:mod:`psy_agents.hpo.optuna_private`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from psy_agents.hpo.optuna_private import (
    rdb_engine,
    running_without_heartbeat,
    study_id,
    study_storage,
)

if TYPE_CHECKING:
    import optuna

# The end of every fail_reason of a trial that is retried from its checkpoint.
REQUEUED = "re-queued to resume from its checkpoint"
STALE_REASON = ("no heartbeat for over {grace} s: its worker died (killed, out of memory or "
                "node lost); " + REQUEUED)
# User attrs that describe one attempt of a trial, not the trial: a retry starts without them.
ATTEMPT_ATTRS = ("fail_reason", "note", "epochs_run", "resumed_from_epoch", "best_epoch",
                 "metrics", "pid", "worker_index")
# Advisory lock classes, one per purpose: "PSYR" queueing retries, "PSYB" claiming budget.
LOCK_KEYS = {"retry": 0x5053_5952, "budget": 0x5053_5942}
_log = logging.getLogger(__name__)


def stale_trial_ids(storage: optuna.storages.RDBStorage, study: int, optuna_ids: list[int],
                    grace_s: int) -> list[int]:
    """The trials of ``study`` to fail as stale, each given its ``fail_reason`` first.

    ``optuna_ids`` (Optuna's answer: heartbeat older than ``grace_s``) plus the RUNNING
    trials that never recorded a heartbeat and started over ``2 * grace_s`` ago by this
    host's clock (their worker died between creating the trial and its first beat; Optuna
    leaves them RUNNING). The reason is written while the trial is still RUNNING, because a
    finished trial's attrs can no longer be written; racing workers may write the same
    reason twice, and only one of them fails the trial and queues its retry.
    """
    import optuna

    started_before = (datetime.datetime.now(datetime.UTC)
                      - datetime.timedelta(seconds=2 * grace_s))
    stale = optuna_ids + running_without_heartbeat(storage, study, started_before)
    reason = STALE_REASON.format(grace=grace_s)
    for trial_id in stale:
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first, reason recorded
    return stale


def retry_callback(max_retry: int) -> Any:
    """Optuna's stale-trial retry, made exactly-once and without the failed attempt's attrs.

    - The retry does not inherit :data:`ATTEMPT_ATTRS`: the cause stays on the FAIL, and a
      retry that dies early must not show the epochs of the attempt before it.
    - It holds the study's retry lock (:func:`retry_lock`) and queues nothing when the trial
      already has a retry, so the worker that failed the trial and :func:`requeue_orphans`
      (which repairs a FAIL whose retry was never queued) cannot both queue one.

    Returns:
        A ``RetryHeartbeatStaleTrialCallback`` whose call returns True when it queued a retry.
    """
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    class _Retry(RetryHeartbeatStaleTrialCallback):
        def __call__(self, study, trial) -> bool:
            """Queue the retry; True when one was queued (Optuna ignores the result)."""
            trial = copy.deepcopy(trial)
            for key in ATTEMPT_ATTRS:
                trial.user_attrs.pop(key, None)
            with retry_lock(study_storage(study), study_id(study)):
                if trial.number in retried_numbers(study):
                    return False
                before = len(study.get_trials(deepcopy=False))
                super().__call__(study, trial)  # queues nothing past max_retry
                return len(study.get_trials(deepcopy=False)) > before

    return _Retry(max_retry=max_retry)


def retried_numbers(study: optuna.Study) -> set[int]:
    """Numbers of the trials that already have a retry queued (or run)."""
    return {n for t in study.get_trials(deepcopy=False)
            for n in t.system_attrs.get("retry_history", ())}


def duplicate_of(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int | None:
    """The earlier retry of the same failed trial, when ``trial`` (a frozen trial) is a
    second one; else None.

    The retry lock makes queueing exactly-once while the database stays up, but a Postgres
    restart drops the advisory lock with its connection: a worker inside the lock and one
    that takes it after the restart can then both queue a retry. The later one must not
    run: both would train from, and write, one checkpoint.
    """
    # ``retry_history`` is the chain so far, its last entry the trial this one retries
    # (``failed_trial`` is the chain's first trial, shared by every retry in the chain)
    history = trial.system_attrs.get("retry_history")
    if not history:
        return None
    return min((t.number for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and t.system_attrs.get("retry_history") == history),
               default=None)


def retry_lock(storage: optuna.storages.BaseStorage, study: int):
    """Serialise queueing retries of study id ``study`` across workers (see :func:`study_lock`)."""
    return study_lock(storage, study, "retry")


@contextlib.contextmanager
def study_lock(storage: optuna.storages.BaseStorage, study: int, purpose: str) -> Iterator[None]:
    """An exclusive lock on study id ``study`` for one ``purpose`` (:data:`LOCK_KEYS`),
    across workers: a Postgres advisory lock (released by the server if the holder dies), a
    file lock beside an SQLite file (its workers share one host), nothing for other
    databases. ``storage`` may be a study's cached storage or the RDBStorage itself.

    The lock's connection is its own: on Postgres the holder uses one connection more than
    usual while it holds the lock.
    """
    key = LOCK_KEYS[purpose]
    engine = rdb_engine(storage)
    if engine.dialect.name == "postgresql":
        import sqlalchemy

        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:a, :b)"),
                         {"a": key, "b": study})
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dropped connection released it
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, :b)"),
                                 {"a": key, "b": study})
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.{purpose}-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def requeue_orphans(study: optuna.Study) -> list[int]:
    """Queue the retry of every stale FAIL that has none; return the numbers queued.

    Optuna commits a stale trial's FAIL first and queues its retry after; a worker killed or
    a database restart in between leaves a FAIL without a retry, a lost trial. Workers call
    this before deciding that a study is finished. Max-retry limits still apply. Idempotent.
    """
    from optuna.trial import TrialState

    callback = study_storage(study).get_heartbeat_stale_trial_callback()
    if callback is None:
        return []
    prefix = STALE_REASON.split("{", 1)[0]
    done = retried_numbers(study)
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
               if t.number not in done
               and str(t.user_attrs.get("fail_reason", "")).startswith(prefix)]
    queued = []
    for trial in orphans:  # the callback copies the trial, takes the lock and re-checks
        if callback(study, trial):
            _log.warning("trial #%d had failed without a retry queued; queued it now",
                         trial.number)
            queued.append(trial.number)
    return queued
