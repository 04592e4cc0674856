"""Every use of Optuna's private API in psy-agents, and nowhere else.

Optuna's public API has no way to reach a study's storage or id, a live trial's frozen copy,
the RDB engine under the storage cache, or the stale-trial query of its heartbeats; the
fault-tolerance of psy-agents needs all of them. Each one is wrapped here in a small named
function so that an Optuna upgrade that moves one breaks one place, and
``tests/hpo/test_optuna_private.py`` (a contract test against the installed Optuna) says which.

Private names used, all checked by that test:

- ``Study._storage`` (the storage, a ``_CachedStorage`` wrapper for an RDB) and
  ``Study._study_id``;
- ``_CachedStorage._backend`` (the ``RDBStorage`` under the cache);
- ``Trial._trial_id``;
- ``RDBStorage._get_stale_trial_ids(study_id)``, overridden by :func:`rdb_storage_class`;
- ``optuna.storages._rdb.storage._create_scoped_session`` and the ORM models of
  ``optuna.storages._rdb.models`` (``TrialModel.trial_id / study_id / state /
  _datetime_start_utc``, ``TrialHeartbeatModel.trial_heartbeat_id``);
- the ``RDBStorage`` attributes ``engine``, ``scoped_session`` and ``grace_period``: no
  underscore, but Optuna documents the attributes of ``RDBStorage`` as not for users.

This module imports nothing of psy-agents (it is the bottom layer); policy (what counts as
stale, what a heartbeat error means) is passed in by :mod:`psy_agents.hpo.recovery` and
:mod:`psy_agents.hpo.connect`. Optuna and SQLAlchemy are imported inside the functions.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    import sqlalchemy.engine

# (storage, study_id, Optuna's stale trial ids, grace period in s) -> the ids to fail as stale
StaleHook = Callable[["optuna.storages.RDBStorage", int, list[int], int], list[int]]
# (trial_id, the error of one heartbeat) -> True to skip that heartbeat, False to raise
HeartbeatErrorHook = Callable[[int, Exception], bool]


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` reads and writes through (for an RDB: Optuna's cache wrapper)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of ``study``."""
    return study._study_id


def rdb_backend(storage: optuna.storages.BaseStorage) -> optuna.storages.RDBStorage:
    """The ``RDBStorage`` behind ``storage``: unwraps Optuna's cache wrapper (what
    :func:`study_storage` returns for an RDB); an ``RDBStorage`` is returned as it is."""
    return getattr(storage, "_backend", storage)


def rdb_engine(storage: optuna.storages.BaseStorage) -> sqlalchemy.engine.Engine:
    """The SQLAlchemy engine of the RDB behind ``storage`` (cache wrapper or not)."""
    return rdb_backend(storage).engine


def frozen_copy(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored state of the live ``trial``, read from its storage now.

    A live Trial has no accessor for its system attrs (``retry_history``, ``failed_trial``);
    the frozen copy has them.
    """
    return trial.study._storage.get_trial(trial._trial_id)


@functools.cache
def rdb_storage_class(stale_hook: StaleHook,
                      heartbeat_error_hook: HeartbeatErrorHook) -> type[optuna.storages.RDBStorage]:
    """An ``RDBStorage`` subclass whose stale-trial query and heartbeat errors go through
    the given hooks. Cached: the same hooks give the same class.

    - ``_get_stale_trial_ids`` returns ``stale_hook(storage, study_id, optuna_ids, grace_s)``,
      where ``optuna_ids`` is Optuna's own answer and ``grace_s`` the storage's grace
      period. Optuna calls it from ``fail_stale_trials``, and so from ``study.optimize``
      too; the trials it returns are then failed and passed to the stale-trial callback.
    - ``record_heartbeat`` that raises calls ``heartbeat_error_hook(trial_id, exc)``: True
      skips this beat, False re-raises (which ends Optuna's heartbeat thread).
    """
    import optuna

    class PsyRDBStorage(optuna.storages.RDBStorage):
        def record_heartbeat(self, trial_id: int) -> None:
            try:
                super().record_heartbeat(trial_id)
            except Exception as exc:
                if not heartbeat_error_hook(trial_id, exc):
                    raise

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            return stale_hook(self, study_id, super()._get_stale_trial_ids(study_id),
                              self.grace_period)

    return PsyRDBStorage


def running_without_heartbeat(storage: optuna.storages.RDBStorage, study_id: int,
                              started_before: datetime.datetime) -> list[int]:
    """Ids of the RUNNING trials of ``study_id`` that never recorded a heartbeat and
    started before ``started_before`` (a timezone-aware time). Reads only.

    Raises:
        optuna.exceptions.StorageInternalError: the query failed (database errors).
    """
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState

    # The `datetime_start` column holds naive UTC.
    limit = started_before.astimezone(datetime.UTC).replace(tzinfo=None)
    with _create_scoped_session(storage.scoped_session) as session:
        rows = (session.query(models.TrialModel.trial_id)
                .outerjoin(models.TrialHeartbeatModel)
                .filter(models.TrialModel.study_id == study_id,
                        models.TrialModel.state == TrialState.RUNNING,
                        models.TrialModel._datetime_start_utc < limit,
                        models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
                .all())
    return [row[0] for row in rows]
