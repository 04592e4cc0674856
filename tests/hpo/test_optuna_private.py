"""Contract: the private Optuna API that ``hpo/optuna_private.py`` wraps still has its shape.

Each test names the Optuna attribute it pins, so an Optuna upgrade that moves one fails here
with that name instead of as a stale trial that is never retried. The first group checks
shapes (names, kinds, signatures, columns) on the installed Optuna; the second runs every
wrapper for real on a SQLite study in ``tmp_path``.
"""

from __future__ import annotations

import datetime
import inspect
import threading

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from psy_agents.hpo import optuna_private as op

RDB = optuna.storages.RDBStorage
pytestmark = [  # the trials here are asked and failed by hand, outside study.optimize
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used"),
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
]


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


# --- shapes on the installed Optuna --------------------------------------------------------


def test_rdb_storage_stale_query_and_heartbeat_take_the_ids_we_pass():
    stale = getattr(RDB, "_get_stale_trial_ids", None)
    assert inspect.isfunction(stale), "optuna.storages.RDBStorage._get_stale_trial_ids is gone"
    assert _params(stale) == ["self", "study_id"], (
        f"RDBStorage._get_stale_trial_ids{inspect.signature(stale)} no longer takes (study_id)")
    assert _params(RDB.record_heartbeat) == ["self", "trial_id"], (
        f"RDBStorage.record_heartbeat{inspect.signature(RDB.record_heartbeat)} changed")
    init = _params(RDB.__init__)
    for name in ("engine_kwargs", "skip_compatibility_check", "heartbeat_interval",
                 "grace_period", "heartbeat_stale_trial_callback", "skip_table_creation"):
        assert name in init, f"RDBStorage.__init__ lost the argument {name!r}"


def test_optuna_fails_stale_trials_through_the_storage_private_query():
    source = inspect.getsource(optuna.storages.fail_stale_trials)
    assert "._get_stale_trial_ids(" in source, (
        "optuna.storages.fail_stale_trials no longer calls storage._get_stale_trial_ids: "
        "the stale-trial override in hpo/optuna_private.py is never called")
    from optuna.storages._cached_storage import _CachedStorage

    assert "_get_stale_trial_ids" in vars(_CachedStorage), (
        "optuna.storages._cached_storage._CachedStorage._get_stale_trial_ids is gone: the "
        "cache no longer forwards the stale-trial query to the RDBStorage")


def test_create_scoped_session_is_a_context_manager_over_a_scoped_session():
    from optuna.storages._rdb import storage as rdb_storage

    fn = getattr(rdb_storage, "_create_scoped_session", None)
    assert callable(fn), "optuna.storages._rdb.storage._create_scoped_session is gone"
    assert _params(fn)[:1] == ["scoped_session"], (
        f"_create_scoped_session{inspect.signature(fn)} no longer takes the scoped_session first")


def test_trial_and_heartbeat_models_have_the_columns_we_query():
    from optuna.storages._rdb import models

    trial = sqlalchemy.inspect(models.TrialModel)
    columns = {attr.key: attr.columns[0] for attr in trial.column_attrs}
    for key in ("trial_id", "study_id", "state", "_datetime_start_utc"):
        assert key in columns, f"optuna.storages._rdb.models.TrialModel.{key} is gone"
    assert columns["_datetime_start_utc"].name == "datetime_start", (
        "TrialModel._datetime_start_utc no longer maps the datetime_start column")
    assert isinstance(columns["_datetime_start_utc"].type, sqlalchemy.DateTime), (
        "TrialModel._datetime_start_utc is no longer a (naive UTC) DateTime column")
    beat = {a.key for a in sqlalchemy.inspect(models.TrialHeartbeatModel).column_attrs}
    assert {"trial_heartbeat_id", "trial_id"} <= beat, (
        f"optuna.storages._rdb.models.TrialHeartbeatModel has columns {sorted(beat)}; "
        "trial_heartbeat_id and trial_id are queried")


# --- every wrapper, for real, on SQLite -----------------------------------------------------


@pytest.fixture
def storage(tmp_path):
    """One of our RDBStorage subclasses with recording hooks, heartbeat 1 s, grace 2 s."""
    calls = {"stale": [], "beat_errors": [], "beaten": threading.Event()}

    def stale_hook(st, study_id, optuna_ids, grace_s):
        calls["stale"].append((study_id, list(optuna_ids), grace_s))
        return optuna_ids + calls.get("also_stale", [])

    def beat_hook(trial_id, exc):
        calls["beat_errors"].append((trial_id, exc))
        calls["beaten"].set()
        return calls.get("skip_beat_errors", True)

    cls = op.rdb_storage_class(stale_hook, beat_hook)
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        st = cls(f"sqlite:///{tmp_path / 'p.db'}", heartbeat_interval=1, grace_period=2)
    st.calls = calls
    yield st
    st.engine.dispose()


def test_a_study_exposes_its_storage_id_and_the_rdb_under_the_cache(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    assert hasattr(study, "_storage"), "optuna.Study._storage is gone"
    assert hasattr(study, "_study_id"), "optuna.Study._study_id is gone"
    assert hasattr(study._storage, "_backend"), (
        f"{type(study._storage).__name__}._backend (the RDBStorage under Optuna's cache) is gone")
    assert op.study_storage(study) is study._storage
    assert op.study_id(study) == storage.get_study_id_from_name("s")
    assert op.rdb_backend(op.study_storage(study)) is storage
    assert op.rdb_backend(storage) is storage  # an RDBStorage is returned as it is
    assert op.rdb_engine(op.study_storage(study)) is storage.engine
    assert op.rdb_engine(storage).dialect.name == "sqlite"


def test_frozen_copy_reads_a_live_trial_system_attrs(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    assert isinstance(getattr(trial, "_trial_id", None), int), "optuna.Trial._trial_id is gone"
    storage.set_trial_system_attr(trial._trial_id, "retry_history", [7])
    frozen = op.frozen_copy(trial)
    assert isinstance(frozen, optuna.trial.FrozenTrial)
    assert (frozen.number, frozen.state) == (trial.number, TrialState.RUNNING)
    assert frozen.system_attrs["retry_history"] == [7]


def test_running_without_heartbeat_selects_by_start_time_and_missing_beat(storage):
    study = optuna.create_study(storage=storage, study_name="s")
    sid = op.study_id(study)
    trial = study.ask()  # RUNNING, no heartbeat yet (only study.optimize beats)
    now = datetime.datetime.now(datetime.UTC)
    later, earlier = now + datetime.timedelta(minutes=1), now - datetime.timedelta(hours=1)
    assert op.running_without_heartbeat(storage, sid, later) == [trial._trial_id]
    assert op.running_without_heartbeat(storage, sid, earlier) == []  # started after that
    # the column holds naive UTC: a time given in another zone means the same instant
    plus5 = later.astimezone(datetime.timezone(datetime.timedelta(hours=5)))
    assert op.running_without_heartbeat(storage, sid, plus5) == [trial._trial_id]
    storage.record_heartbeat(trial._trial_id)
    assert op.running_without_heartbeat(storage, sid, later) == []  # it has beaten
    study.tell(study.ask(), 1.0)
    assert op.running_without_heartbeat(storage, sid, later) == []  # only RUNNING trials


def test_the_subclass_is_cached_and_its_stale_query_is_what_optuna_fails(storage):
    stale_hook, beat_hook = (lambda *a: []), (lambda *a: False)
    assert op.rdb_storage_class(stale_hook, beat_hook) is op.rdb_storage_class(stale_hook,
                                                                                beat_hook)
    assert issubclass(type(storage), RDB)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    storage.calls["also_stale"] = [trial._trial_id]
    optuna.storages.fail_stale_trials(study)
    assert storage.calls["stale"] == [(op.study_id(study), [], 2)]
    assert study.trials[trial.number].state == TrialState.FAIL


def test_heartbeat_errors_go_to_the_hook_during_optimize(storage, monkeypatch):
    def broken(self, trial_id):
        raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed"))

    monkeypatch.setattr(RDB, "record_heartbeat", broken)  # under our override's super()
    study = optuna.create_study(storage=storage, study_name="s")
    beaten = storage.calls["beaten"]

    def objective(trial):
        beaten.wait(5)  # Optuna's heartbeat thread beats at the trial's start
        return 1.0

    study.optimize(objective, n_trials=1)
    assert beaten.is_set(), "Optuna's heartbeat thread no longer calls storage.record_heartbeat"
    assert study.trials[0].state == TrialState.COMPLETE  # the skipped beat was not fatal
    trial_id, exc = storage.calls["beat_errors"][0]
    assert isinstance(exc, sqlalchemy.exc.OperationalError)
    assert trial_id == storage.get_trial_id_from_study_id_trial_number(op.study_id(study), 0)
    storage.calls["skip_beat_errors"] = False
    with pytest.raises(sqlalchemy.exc.OperationalError):
        storage.record_heartbeat(trial_id)
