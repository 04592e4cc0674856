"""A stale trial whose retry was never queued is repaired, exactly once.

Optuna fails a stale trial (commits FAIL) and only then queues its retry; a worker SIGKILLed
or a database restart between the two left a FAIL with no retry: a lost trial (seen once in
the chaos run, when the restart landed in that gap). Workers now call ``requeue_orphans``
before deciding a study is finished, and queueing a retry is idempotent under a per-study
lock (Postgres advisory lock, file lock beside SQLite). Real SQLite and real PostgreSQL;
the concurrency test races real processes.
"""

from __future__ import annotations

import multiprocessing

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.connect import StorageSettings, open_storage
from psy_agents.hpo.recovery import STALE_REASON, requeue_orphans, retry_callback

SETTINGS = StorageSettings(heartbeat_interval_s=1, grace_period_s=2)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'o.db'}"
    return request.getfixturevalue("pg_url")


def _orphan(url: str, *, reason: str = STALE_REASON.format(grace=2)) -> int:
    """A study with trial 0 COMPLETE and trial 1 failed as stale with no retry queued:
    what a worker killed between Optuna's FAIL commit and its callback leaves behind."""
    storage = open_storage(url, SETTINGS, create_schema=True)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.enqueue_trial({"x": 0.25})
    done = study.ask()
    done.suggest_float("x", 0, 1)
    study.tell(done, 1.0)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("original_trial", trial.number)
    trial.set_user_attr("fail_reason", reason)
    storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    return trial.number


def _study(url: str):
    return optuna.load_study(study_name="s", storage=open_storage(url, SETTINGS))


def test_an_orphaned_stale_fail_gets_one_retry(url):
    number = _orphan(url)
    study = _study(url)
    assert requeue_orphans(study) == [number]
    retry = study.get_trials(states=(TrialState.WAITING,))
    assert len(retry) == 1
    failed = study.trials[number]
    assert retry[0].params == failed.params
    assert retry[0].system_attrs["retry_history"] == [number]
    assert retry[0].user_attrs == {"original_trial": number}
    # again, and through the stale-trial callback itself: still one retry
    assert requeue_orphans(study) == []
    assert retry_callback(3)(study, failed) is False
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


def test_other_fails_are_not_retried(url):
    _orphan(url, reason="config error: lr must be positive")
    study = _study(url)
    assert requeue_orphans(study) == []
    assert not study.get_trials(states=(TrialState.WAITING,))


def _race(url: str, barrier, out) -> None:
    import time

    from psy_agents.hpo import recovery as storage_mod

    check = storage_mod.retried_numbers

    def slow_check(study):  # widen the check-then-queue gap so that a missing lock shows
        seen = check(study)
        time.sleep(0.5)
        return seen

    storage_mod.retried_numbers = slow_check
    study = _study(url)
    barrier.wait()
    out.put(requeue_orphans(study))


def test_racing_workers_queue_the_retry_once(url):
    number = _orphan(url)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(url, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = sorted(out.get(timeout=5) for _ in procs)
    assert results == [[], [], [], [number]]
    assert len(_study(url).get_trials(states=(TrialState.WAITING,))) == 1


def test_a_second_retry_of_one_trial_is_known_as_a_duplicate(url):
    """What a Postgres restart inside the retry lock can leave: two retries of one FAIL
    (queued here with Optuna's own callback, no lock). The earlier one runs; the objective
    ends the later one unrun, as FAIL with ``duplicate_of`` (hpo/objective.py)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from psy_agents.hpo.recovery import duplicate_of

    number = _orphan(url)
    study = _study(url)
    failed = study.trials[number]
    for _ in range(2):
        RetryHeartbeatStaleTrialCallback(max_retry=3)(study, failed)
    first, second = study.get_trials(states=(TrialState.WAITING,))
    assert duplicate_of(study, first) is None
    assert duplicate_of(study, second) == first.number
    assert duplicate_of(study, failed) is None and duplicate_of(study, study.trials[0]) is None
    # the first retry dies too: its own retry is the chain's next step, not a duplicate
    # (every retry in a chain shares Optuna's ``failed_trial``, the chain's first trial)
    study._storage.set_trial_state_values(first._trial_id, state=TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study.trials[first.number])
    third = study.trials[-1]
    assert third.system_attrs["retry_history"] == [number, first.number]
    assert third.system_attrs["failed_trial"] == second.system_attrs["failed_trial"]
    assert duplicate_of(study, third) is None
