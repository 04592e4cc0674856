"""The storage rules the chaos run relies on, one at a time, on a real SQLite storage.

- a RUNNING trial whose worker died before its first heartbeat is failed (Optuna skips such
  trials, so they stayed RUNNING forever), with its cause, and retried;
- a retry starts without the failed attempt's own attrs;
- which errors count as storage blips.
"""

from __future__ import annotations

import time

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from psy_agents.hpo.connect import StorageSettings, is_transient, open_storage


def _storage(tmp_path):
    settings = StorageSettings(heartbeat_interval_s=1, grace_period_s=2)
    return open_storage(f"sqlite:///{tmp_path / 'o.db'}", settings, create_schema=True)


def test_trial_without_any_heartbeat_is_failed_with_a_cause_and_retried(tmp_path):
    storage = _storage(tmp_path)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    trial = study.ask()  # RUNNING, and no heartbeat thread ever ran: a worker killed here
    trial.suggest_float("x", 0, 1)
    for key, value in (("pid", 1), ("epochs_run", 3), ("original_trial", 0)):
        trial.set_user_attr(key, value)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state == TrialState.RUNNING  # not before 2 x grace period
    time.sleep(4.5)
    optuna.storages.fail_stale_trials(study)
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"].startswith("no heartbeat for over 2 s: its worker died")
    assert retry.state == TrialState.WAITING and retry.params == failed.params
    assert retry.user_attrs == {"original_trial": 0}  # the attempt's own attrs stay behind


def test_what_counts_as_a_storage_blip():
    dropped = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed"))
    assert is_transient(dropped)
    assert is_transient(sqlalchemy.exc.PendingRollbackError("rollback first"))
    assert not is_transient(ValueError("bad config"))
    try:  # Optuna's _run_trial when storing a result and reading it back both fail
        try:
            raise dropped
        finally:
            raise UnboundLocalError("updated_state")
    except UnboundLocalError as exc:
        assert is_transient(exc)
    assert not is_transient(UnboundLocalError("a real bug, nothing underneath"))
