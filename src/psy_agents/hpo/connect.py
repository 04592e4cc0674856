"""Opening the Optuna storage: engine options, schema creation, error translation, backoff.

Contracts:

- :func:`open_storage` is the one factory of Optuna storages. Every storage it returns has
  heartbeats, retries the trials of dead workers (:mod:`psy_agents.hpo.recovery`) and rides
  out a heartbeat that hits a storage blip. Postgres gets ``pool_pre_ping``, a small pool, TCP
  keepalives and a connect timeout; SQLite gets WAL and a busy timeout.
- The schema is created once, under a Postgres advisory lock, by whoever creates the studies
  (:func:`create_schema_once`); workers open the storage with ``skip_table_creation``.
- Every failure to open a storage is a :class:`~psy_agents.errors.StorageError` of one line
  that names the masked URL and what to do; it never contains the password.
- :func:`with_retry` retries only :func:`is_transient` errors, with capped exponential
  backoff and jitter; any other error propagates at once.

Optuna and SQLAlchemy are imported inside the functions, so importing this module is light.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from psy_agents.errors import StorageError, StorageUnavailable, TrialFailed
from psy_agents.hpo.optuna_private import rdb_storage_class
from psy_agents.hpo.recovery import retry_callback, stale_trial_ids
from psy_agents.hpo.storage_url import is_postgres, mask_url, scrub, sqlite_path
from psy_agents.settings import STORAGE_ENV

_SCHEMA_LOCK_KEY = 0x5053_5941  # "PSYA": one advisory lock id for schema creation
_SQLITE_BUSY_TIMEOUT_S = 60
_log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class StorageSettings:
    """How a process talks to the storage. Seconds are in the names.

    Heartbeats: a trial whose worker sent no heartbeat for ``grace_period_s`` is failed by the
    next worker that looks and re-queued (up to ``max_retry`` times).

    Raises:
        StorageError: the grace period is not longer than the heartbeat interval.
    """

    heartbeat_interval_s: int = 60
    grace_period_s: int = 180
    max_retry: int = 3
    pool_size: int = 2
    # A host that drops packets is reported after this long (libpq's connect_timeout). Low
    # enough that a bad URL at start fails within 10 s, interpreter start-up included; a
    # database lost mid-run is ridden out by retries with backoff, not by this timeout.
    connect_timeout_s: int = 5

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s < 1 or self.grace_period_s <= self.heartbeat_interval_s:
            raise StorageError(
                f"heartbeat interval {self.heartbeat_interval_s} s and grace period "
                f"{self.grace_period_s} s are inconsistent",
                "use an interval >= 1 s and a grace period longer than the interval")


def engine_kwargs(url: str, settings: StorageSettings) -> dict[str, Any]:
    """SQLAlchemy engine options: pre-ping, small pool and keepalives for Postgres; a busy
    timeout for SQLite (``timeout`` makes sqlite3 wait for a lock instead of failing)."""
    if is_postgres(url):
        return {
            "pool_pre_ping": True,  # idle connections drop during hour-long trials
            "pool_size": settings.pool_size,
            "max_overflow": 2,
            "pool_recycle": 1800,
            "connect_args": {
                "connect_timeout": settings.connect_timeout_s,
                "keepalives": 1, "keepalives_idle": 30,
                "keepalives_interval": 10, "keepalives_count": 3,
                "application_name": "psy-agents",
            },
        }
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": _SQLITE_BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _enable_wal(path: Path) -> None:
    # WAL lets readers (status, export) run beside a writing worker; the mode is stored in
    # the file, so setting it once per process is enough. busy_timeout covers two workers
    # switching it at the same moment.
    with sqlite3.connect(path, timeout=_SQLITE_BUSY_TIMEOUT_S) as conn:
        conn.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_S * 1000}")
        conn.execute("PRAGMA journal_mode = WAL")


def quiet_optuna() -> None:
    """Silence Optuna's info logs and ExperimentalWarnings (heartbeats and stale-trial retry
    are marked experimental but are the documented fault-tolerance path); the worker logs
    its own one line per trial. Idempotent."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, _TrialFailedInOneLine) for f in handler.filters):
            handler.addFilter(_TrialFailedInOneLine())


class _TrialFailedInOneLine(logging.Filter):
    """Optuna logs a failed trial's exception with its traceback. A ``TrialFailed`` is a
    verdict whose reason is in the trial's ``fail_reason`` and the worker's own line, so
    its record keeps the one-line message and drops the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TrialFailed):
            record.exc_info, record.exc_text = None, None
        return True


def _skip_heartbeat_blip(trial_id: int, exc: Exception) -> bool:
    """Heartbeat error policy: a transient error skips one beat. Optuna's heartbeat thread
    ends on the first error it sees, and a trial without heartbeats is failed as stale
    ``grace_period`` later while still running."""
    if not is_transient(exc):
        return False
    _log.warning("heartbeat of trial id %d skipped: storage blip (%s)", trial_id,
                 type(_root(exc)).__name__)
    return True


def open_storage(url: str, settings: StorageSettings | None = None, *,
                 create_schema: bool = False):
    """An ``optuna.storages.RDBStorage`` for ``url`` with heartbeats and stale-trial retry.

    Args:
        create_schema: create the tables (only the process creating studies does this; use
            :func:`create_schema_once`). Workers leave it False and skip table creation.

    Raises:
        StorageError: the database is unreachable (within ``connect_timeout_s``), has no
            psy-agents schema, or (SQLite, ``create_schema`` False) its file is missing; the
            message never contains the password.
    """
    import optuna
    import sqlalchemy.exc

    quiet_optuna()
    settings = settings or StorageSettings()
    path = sqlite_path(url)
    if path is not None:
        if not create_schema and not path.exists():
            raise StorageError(f"no storage file at {path}",
                               "start the search with `launch hpo` (it creates the studies)")
        path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(path)
    storage_class = rdb_storage_class(stale_trial_ids, _skip_heartbeat_blip)
    try:
        return storage_class(
            url, engine_kwargs=engine_kwargs(url, settings),
            heartbeat_interval=settings.heartbeat_interval_s,
            grace_period=settings.grace_period_s,
            heartbeat_stale_trial_callback=retry_callback(settings.max_retry),
            skip_table_creation=not create_schema)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
            RuntimeError, ImportError) as exc:
        raise _storage_error(url, exc) from None


def create_schema_once(url: str, settings: StorageSettings | None = None):
    """Create the Optuna schema if missing and return the storage. Idempotent.

    On Postgres a session advisory lock serialises concurrent callers: concurrent CREATE
    TABLE on an empty database fails (duplicate pg_type rows), so only one creates.

    Raises:
        StorageError: as :func:`open_storage`.
    """
    if not is_postgres(url):
        return open_storage(url, settings, create_schema=True)
    import sqlalchemy

    settings = settings or StorageSettings()
    kwargs = engine_kwargs(url, settings)
    kwargs.pop("pool_size"), kwargs.pop("max_overflow")
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **kwargs)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            try:
                storage = open_storage(url, settings, create_schema=True)
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                             {"k": _SCHEMA_LOCK_KEY})
        engine.dispose()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise _storage_error(url, exc) from None
    return storage


def _storage_error(url: str, exc: BaseException) -> StorageError:
    # Optuna wraps driver errors in StorageInternalError, SQLAlchemy in its own classes
    # ("(psycopg2.OperationalError) ..."): the driver's own first line says what went wrong.
    transient = is_transient(exc)
    exc = _root(exc)
    exc = getattr(exc, "orig", None) or exc
    text = " ".join(str(exc).strip().splitlines()[:1]) or type(exc).__name__
    detail = scrub(" ".join(text.split()), url)
    if "does not exist" in detail or "no such table" in detail or "version_info" in detail:
        return StorageError(f"storage {mask_url(url)} has no psy-agents schema ({detail})",
                            "create the studies first with `launch hpo`")
    fix = _fix_for(detail)
    # A refused or silent server may be back in a minute; a refused password will not be.
    kind = StorageUnavailable if transient and not _is_credentials(detail) else StorageError
    return kind(f"cannot use storage {mask_url(url)}: {detail}", fix)


def _is_credentials(detail: str) -> bool:
    return "authentication failed" in detail or "no password supplied" in detail


def _fix_for(detail: str) -> str:
    """What to do about a failed connection, from the driver's first line."""
    where = f"(--storage or {STORAGE_ENV})"
    if _is_credentials(detail):
        return f"check the user name and password in the URL {where}"
    if "timeout expired" in detail or "timed out" in detail:
        return (f"check the host and port in the URL {where}: nothing answered (a host that "
                "is down, or a firewall dropping packets between here and the database)")
    return f"check the URL {where} and that the database is up"


def _root(exc: BaseException) -> BaseException:
    """The error under Optuna's ``StorageInternalError`` wrappers (``exc`` if none)."""
    from optuna.exceptions import StorageInternalError

    while isinstance(exc, StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: dropped connections, timeouts, locked SQLite."""
    import sqlalchemy.exc

    if isinstance(exc, UnboundLocalError) and exc.__context__ is not None:
        # Optuna 5's _run_trial: when storing a trial's result fails and reading it back
        # fails too (database down), its `finally` raises UnboundLocalError instead.
        return is_transient(exc.__context__)
    exc = _root(exc)
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    # PendingRollbackError: a session whose connection dropped mid-transaction.
    return isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError |
                      sqlalchemy.exc.TimeoutError | sqlalchemy.exc.PendingRollbackError)


def with_retry(fn: Callable[[], T], *, what: str, attempts: int = 6,
               base_delay_s: float = 0.5, max_delay_s: float = 20.0,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn``; on a transient storage error retry with exponential backoff + jitter.

    Each delay is ``min(max_delay_s, base_delay_s * 2**attempt)`` scaled by a random factor
    in [0.5, 1), so workers that lost the database together do not return together.

    Raises:
        The last transient error after ``attempts`` tries; non-transient errors at once.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            delay = min(max_delay_s, base_delay_s * 2 ** attempt) * (0.5 + random.random() / 2)
            _log.warning("storage blip during %s (%s); retry %d/%d in %.1f s", what,
                         type(exc).__name__, attempt + 1, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
