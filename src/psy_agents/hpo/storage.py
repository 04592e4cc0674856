"""Optuna storage: URL resolution, password masking, one RDBStorage factory, retries.

The URL comes from ``--storage``, else the env var ``PSY_STORAGE``, else the embedded default
``sqlite:///runs/optuna.db`` (relative to the current directory). Postgres gets
``pool_pre_ping``, a small pool, TCP keepalives and a connect timeout; SQLite gets WAL and a
busy timeout. Every RDB storage has heartbeats and retries trials whose worker died
(``RetryHeartbeatStaleTrialCallback``). The schema is created once, under a Postgres advisory
lock, by whoever creates the studies (:func:`create_schema_once`); workers open the storage
with ``skip_table_creation``. A URL is printed or logged only through :func:`mask_url`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from psy_agents.errors import StorageError

DEFAULT_URL = "sqlite:///runs/optuna.db"
ENV_URL = "PSY_STORAGE"
ENV_HEARTBEAT = "PSY_HEARTBEAT_INTERVAL_S"
ENV_GRACE = "PSY_GRACE_PERIOD_S"
_SCHEMA_LOCK_KEY = 0x5053_5941  # "PSYA": one advisory lock id for schema creation
_log = logging.getLogger(__name__)
T = TypeVar("T")

# user:password@ in the authority part, and password=... in a query string.
_AUTH_RE = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@?#]*):(?P<pw>[^@/?#]*)@")
_QUERY_PW_RE = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to print or log)."""
    masked = _AUTH_RE.sub(lambda m: f"{m['head']}:***@", url)
    return _QUERY_PW_RE.sub(lambda m: f"{m['head']}***", masked)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, say) with the password of ``url`` replaced by ``***``."""
    for regex in (_AUTH_RE, _QUERY_PW_RE):
        match = regex.search(url)
        if match and match["pw"]:
            text = text.replace(match["pw"], "***")
    return text.replace(url, mask_url(url))


@dataclass(frozen=True)
class StorageSettings:
    """How a process talks to the storage. Seconds are in the names.

    Heartbeats: a trial whose worker sent no heartbeat for ``grace_period_s`` is failed by the
    next worker that looks and re-queued (up to ``max_retry`` times).
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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageSettings:
        """Defaults, with heartbeat settings overridden by PSY_HEARTBEAT_INTERVAL_S and
        PSY_GRACE_PERIOD_S (tests use seconds; clusters keep the defaults)."""
        env = os.environ if env is None else env
        kwargs: dict[str, int] = {}
        for name, field in ((ENV_HEARTBEAT, "heartbeat_interval_s"), (ENV_GRACE, "grace_period_s")):
            if env.get(name):
                try:
                    kwargs[field] = int(env[name])
                except ValueError:
                    raise StorageError(f"{name}={env[name]!r} is not a whole number of seconds",
                                       f"set {name} to an integer") from None
        return cls(**kwargs)


def resolve_url(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """The storage URL: flag > env PSY_STORAGE > embedded SQLite default.

    Creates nothing: a SQLite file's folder is made when the schema is (``open_storage``),
    so a command that fails before that leaves no empty ``runs/`` behind.
    """
    env = os.environ if env is None else env
    return flag or env.get(ENV_URL) or DEFAULT_URL


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None for other URLs and ``:memory:``."""
    if not url.startswith("sqlite:///"):
        return None
    raw = url[len("sqlite:///"):].split("?", 1)[0]
    return None if raw in ("", ":memory:") else Path(raw)


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql", "postgres"))


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
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def _enable_wal(path: Path) -> None:
    # WAL lets readers (status, export) run beside a writing worker; the mode is stored in
    # the file, so setting it once per process is enough. busy_timeout covers the race of
    # two workers switching it at the same moment.
    with sqlite3.connect(path, timeout=60) as conn:
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA journal_mode = WAL")


def quiet_optuna() -> None:
    """Silence Optuna's info logs and ExperimentalWarnings (heartbeats and stale-trial retry
    are marked experimental but are the documented fault-tolerance path); the worker logs
    its own one line per trial."""
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
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__name__ == "TrialFailed":
            record.exc_info, record.exc_text = None, None
        return True


def open_storage(url: str, settings: StorageSettings | None = None, *,
                 create_schema: bool = False):
    """An ``optuna.storages.RDBStorage`` for ``url`` with heartbeats and stale-trial retry.

    Args:
        create_schema: create the tables (only the process creating studies does this; use
            :func:`create_schema_once`). Workers leave it False and skip table creation.

    Raises:
        StorageError: the database is unreachable (within ``connect_timeout_s``) or has no
            psy-agents schema; the message never contains the password.
    """
    import optuna
    import sqlalchemy.exc

    quiet_optuna()
    settings = settings or StorageSettings.from_env()
    path = sqlite_path(url)
    if path is not None:
        if not create_schema and not path.exists():
            raise StorageError(f"no storage file at {path}",
                               "start the search with `launch hpo` (it creates the studies)")
        path.parent.mkdir(parents=True, exist_ok=True)
        _enable_wal(path)
    try:
        return _storage_class()(
            url, engine_kwargs=engine_kwargs(url, settings),
            heartbeat_interval=settings.heartbeat_interval_s,
            grace_period=settings.grace_period_s,
            heartbeat_stale_trial_callback=retry_callback(settings.max_retry),
            skip_table_creation=not create_schema)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
            RuntimeError, ImportError) as exc:
        raise _storage_error(url, exc) from None


STALE_REASON = ("no heartbeat for over {grace} s: its worker died (killed, out of memory or "
                "node lost); re-queued to resume from its checkpoint")


# User attrs that describe one attempt of a trial, not the trial: a retry starts without them.
ATTEMPT_ATTRS = ("fail_reason", "note", "epochs_run", "resumed_from_epoch", "best_epoch",
                 "metrics", "pid", "worker_index")


def retry_callback(max_retry: int):
    """Optuna's stale-trial retry, made exactly-once and without the failed attempt's attrs.

    - The retry does not inherit :data:`ATTEMPT_ATTRS`: the cause stays on the FAIL, and a
      retry that dies early must not show the epochs of the attempt before it.
    - It holds the study's retry lock (:func:`retry_lock`) and queues nothing when the trial
      already has a retry, so the worker that failed the trial and :func:`requeue_orphans`
      (which repairs a FAIL whose retry was never queued) cannot both queue one.
    """
    import copy

    from optuna.storages import RetryHeartbeatStaleTrialCallback

    class _Retry(RetryHeartbeatStaleTrialCallback):
        def __call__(self, study, trial) -> bool:
            """Queue the retry; True when one was queued (Optuna ignores the result)."""
            trial = copy.deepcopy(trial)
            for key in ATTEMPT_ATTRS:
                trial.user_attrs.pop(key, None)
            with retry_lock(study._storage, study._study_id):
                if trial.number in retried_numbers(study):
                    return False
                before = len(study.get_trials(deepcopy=False))
                super().__call__(study, trial)  # queues nothing past max_retry
                return len(study.get_trials(deepcopy=False)) > before

    return _Retry(max_retry=max_retry)


def retried_numbers(study) -> set[int]:
    """Numbers of the trials that already have a retry queued (or run)."""
    return {n for t in study.get_trials(deepcopy=False)
            for n in t.system_attrs.get("retry_history", ())}


def duplicate_of(study, trial) -> int | None:
    """The earlier retry of the same failed trial, when ``trial`` (a frozen trial) is a
    second one; else None.

    The retry lock makes queueing exactly-once while the database stays up, but a Postgres
    restart drops the advisory lock with its connection: a worker inside the lock and one
    that takes it after the restart can then both queue a retry (seen once in the chaos
    run). The later one must not run: both would train from, and write, one checkpoint.
    """
    # ``retry_history`` is the chain so far, its last entry the trial this one retries
    # (``failed_trial`` is the chain's first trial, shared by every retry in the chain)
    history = trial.system_attrs.get("retry_history")
    if not history:
        return None
    return min((t.number for t in study.get_trials(deepcopy=False)
                if t.number < trial.number and t.system_attrs.get("retry_history") == history),
               default=None)


_RETRY_LOCK_KEY = 0x5053_5952  # "PSYR": advisory lock class for queueing retries


@contextlib.contextmanager
def retry_lock(storage, study_id: int):
    """Serialise queueing retries of one study across workers: a Postgres advisory lock
    (released by the server if the holder dies), a file lock beside an SQLite file (its
    workers share one host), nothing for other databases."""
    engine = getattr(storage, "_backend", storage).engine  # study._storage is a cache wrapper
    if engine.dialect.name == "postgresql":
        import sqlalchemy

        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:a, :b)"),
                         {"a": _RETRY_LOCK_KEY, "b": study_id})
            try:
                yield
            finally:
                with contextlib.suppress(Exception):  # a dropped connection released it
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:a, :b)"),
                                 {"a": _RETRY_LOCK_KEY, "b": study_id})
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl

    with open(f"{database}.retry-lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def requeue_orphans(study) -> list[int]:
    """Queue the retry of every stale FAIL that has none; return the numbers queued.

    Optuna commits a stale trial's FAIL first and queues its retry after; a worker killed or
    a database restart in between leaves a FAIL without a retry, a lost trial. Workers call
    this before deciding that a study is finished. Max-retry limits still apply.
    """
    from optuna.trial import TrialState

    callback = study._storage.get_heartbeat_stale_trial_callback()
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


def _storage_class():
    """RDBStorage with the fault-tolerance gaps of Optuna's heartbeats closed:

    - a heartbeat that hits a storage blip is skipped, not fatal: Optuna's heartbeat
      thread dies on the first error, so a trial running through a database restart
      would look dead ``grace_period`` later and be retried while still running;
    - a RUNNING trial that never recorded a heartbeat (its worker died between creating
      it and the first beat) counts as stale after twice the grace period, by this
      host's clock; Optuna skips such trials, so they stayed RUNNING forever;
    - each stale trial gets a ``fail_reason`` user attr just before it is failed (a
      finished trial's attrs can no longer be written). Optuna fails stale trials inside
      ``study.optimize`` too, which is why this hooks the stale-trial query. Racing
      workers may write the same reason twice; only one fails the trial and queues its retry.
    """
    import optuna

    class PsyRDBStorage(optuna.storages.RDBStorage):
        def record_heartbeat(self, trial_id: int) -> None:
            try:
                super().record_heartbeat(trial_id)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                _log.warning("heartbeat of trial id %d skipped: storage blip (%s)", trial_id,
                             type(_root(exc)).__name__)

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            stale = super()._get_stale_trial_ids(study_id) + self._unbeaten_ids(study_id)
            reason = STALE_REASON.format(grace=self.grace_period)
            for trial_id in stale:
                try:
                    self.set_trial_user_attr(trial_id, "fail_reason", reason)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # another worker failed it first, reason recorded
            return stale

        def _unbeaten_ids(self, study_id: int) -> list[int]:
            import datetime

            from optuna.storages._rdb import models
            from optuna.trial import TrialState

            # Optuna 5 stores start times as naive UTC in the `datetime_start` column.
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            limit = now - datetime.timedelta(seconds=2 * self.grace_period)
            from optuna.storages._rdb.storage import _create_scoped_session

            with _create_scoped_session(self.scoped_session) as session:
                rows = (session.query(models.TrialModel.trial_id)
                        .outerjoin(models.TrialHeartbeatModel)
                        .filter(models.TrialModel.study_id == study_id,
                                models.TrialModel.state == TrialState.RUNNING,
                                models.TrialModel._datetime_start_utc < limit,
                                models.TrialHeartbeatModel.trial_heartbeat_id.is_(None))
                        .all())
            return [row[0] for row in rows]

    return PsyRDBStorage


def _storage_error(url: str, exc: BaseException) -> StorageError:
    # Optuna wraps driver errors in StorageInternalError, SQLAlchemy in its own classes
    # ("(psycopg2.OperationalError) ..."): the driver's own first line says what went wrong.
    exc = _root(exc)
    exc = getattr(exc, "orig", None) or exc
    text = " ".join(str(exc).strip().splitlines()[:1]) or type(exc).__name__
    detail = scrub(" ".join(text.split()), url)
    if "does not exist" in detail or "no such table" in detail or "version_info" in detail:
        return StorageError(f"storage {mask_url(url)} has no psy-agents schema ({detail})",
                            "create the studies first with `launch hpo`")
    return StorageError(f"cannot use storage {mask_url(url)}: {detail}", _fix_for(detail))


def _fix_for(detail: str) -> str:
    """What to do about a failed connection, from the driver's first line."""
    where = f"(--storage or {ENV_URL})"
    if "authentication failed" in detail or "no password supplied" in detail:
        return f"check the user name and password in the URL {where}"
    if "timeout expired" in detail or "timed out" in detail:
        return (f"check the host and port in the URL {where}: nothing answered (a host that "
                "is down, or a firewall dropping packets between here and the database)")
    return f"check the URL {where} and that the database is up"


def create_schema_once(url: str, settings: StorageSettings | None = None):
    """Create the Optuna schema if missing and return the storage. Idempotent.

    On Postgres a session advisory lock serialises concurrent callers: concurrent CREATE
    TABLE on an empty database fails (duplicate pg_type rows), so only one creates.
    """
    if not is_postgres(url):
        return open_storage(url, settings, create_schema=True)
    import sqlalchemy

    settings = settings or StorageSettings.from_env()
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


def _root(exc: BaseException) -> BaseException:
    while type(exc).__name__ == "StorageInternalError" and exc.__cause__ is not None:
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
