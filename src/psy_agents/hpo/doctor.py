"""Is a storage ready for N workers? Pure checks behind `launch doctor`.

Each check returns a :class:`Check` (ok / warn / fail, what was seen, what to change):

- ``reach``: the database answers (and, for Postgres, accepts this user);
- ``schema``: the database's Optuna schema version vs the installed Optuna's head, both
  from Optuna's public ``RDBStorage.get_current_version`` / ``get_head_version`` (absent = a
  new database, which `launch hpo` fills);
- ``connections``: Postgres ``max_connections`` against N workers x connections per worker
  plus headroom for the launcher, `launch status` and the superuser reserve;
- ``clock``: skew between this host and the database. Optuna compares heartbeats with
  the database's clock, but trial start/complete times (stage narrowing takes trials in
  completion order; a trial that never sent a heartbeat is judged by its start time) come
  from each host's clock.

:func:`run_checks` only reads: it creates no file, table or row (the one exception is
Optuna's own alembic stamp on a pre-v1.0 schema, see :func:`optuna_schema_version`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

from psy_agents.hpo.connect import StorageSettings, engine_kwargs
from psy_agents.hpo.optuna_private import rdb_engine
from psy_agents.hpo.storage_url import is_postgres, mask_url, scrub, sqlite_path

HEADROOM = 5  # launcher, `launch status`/`export`, a dashboard, a psql session
SKEW_WARN_S = 2.0
SKEW_FAIL_S = 30.0
SQLITE_MAX_WORKERS = 4  # beyond this, writers queue on SQLite's single lock


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:4s} {self.name}: {self.detail}" + (f" — {self.fix}" if self.fix else "")


def connections_per_worker(settings: StorageSettings) -> tuple[int, int]:
    """(usual, worst) connections one worker holds: the pool, whose main thread and
    heartbeat thread each hold one during a trial, and the pool's overflow at worst."""
    kwargs = engine_kwargs("postgresql://", settings)
    return kwargs["pool_size"], kwargs["pool_size"] + kwargs["max_overflow"]


def check_connections(max_connections: int, reserved: int, in_use: int, workers: int,
                      settings: StorageSettings) -> Check:
    """Pure: does ``workers`` x connections per worker fit what the server has left?"""
    usual, worst = connections_per_worker(settings)
    free = max_connections - reserved - in_use
    need, need_worst = workers * usual + HEADROOM, workers * worst + HEADROOM
    seen = (f"max_connections {max_connections} (reserved {reserved}, in use {in_use}); "
            f"{workers} workers need {need} (at worst {need_worst})")
    wanted = max_connections - free + need_worst
    if need > free:
        return Check("connections", "fail", seen,
                     f"set max_connections >= {wanted} in postgresql.conf and restart "
                     "Postgres, or use fewer workers (or put PgBouncer in front)")
    if need_worst > free:
        return Check("connections", "warn", seen,
                     f"bursts may be refused; max_connections >= {wanted} is safe")
    return Check("connections", "ok", seen)


def check_skew(skew_s: float) -> Check:
    """Pure: the clock check for a measured skew (database minus this host, seconds)."""
    seen = f"database clock {skew_s:+.1f} s from this host"
    if abs(skew_s) > SKEW_FAIL_S:
        return Check("clock", "fail", seen, "sync the clocks (NTP/chrony) on this host and "
                     "the database server")
    if abs(skew_s) > SKEW_WARN_S:
        return Check("clock", "warn", seen, "enable NTP/chrony; completion order of trials "
                     "across hosts may be off by the skew")
    return Check("clock", "ok", seen)


def check_schema(current: str | None, head: str) -> Check:
    """Pure: the stored alembic revision against the installed Optuna's head."""
    if current is None:
        return Check("schema", "ok", f"no Optuna schema yet (installed Optuna expects {head}); "
                     "`launch hpo` creates it")
    if current == head:
        return Check("schema", "ok", f"Optuna schema {current}")
    return Check("schema", "fail", f"database has Optuna schema {current}, installed Optuna "
                 f"expects {head}", "run `optuna storage upgrade --storage URL`, or install "
                 "the Optuna version that created it")


def optuna_head() -> str:
    """The schema version the installed Optuna expects (its alembic head revision).

    Read from a throw-away in-memory SQLite storage, so no database is touched.
    """
    import optuna

    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    try:
        return storage.get_head_version()
    finally:
        rdb_engine(storage).dispose()


def optuna_schema_version(url: str, kwargs: dict[str, Any], conn) -> str | None:
    """The Optuna schema version stored in the database at ``url``; None when it has no
    Optuna schema yet.

    A database without Optuna's ``version_info`` table has no schema, and is not opened as
    an ``RDBStorage`` (that would create rows). One with a schema is opened without the
    compatibility check (which raises for an old schema) and without table creation: that
    reads only, except that Optuna stamps the alembic revision of a schema made before
    Optuna used alembic (v1.0), as any Optuna that opens it does.

    Args:
        kwargs: SQLAlchemy engine options for the storage's own engine.
        conn: an open connection to the same database, to look for the table.

    Raises:
        sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError: the database
            could not be read.
    """
    import optuna
    import sqlalchemy

    if not sqlalchemy.inspect(conn).has_table("version_info"):
        return None
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                         skip_compatibility_check=True, skip_table_creation=True)
    try:
        return storage.get_current_version()
    finally:
        rdb_engine(storage).dispose()


def run_checks(url: str, workers: int, settings: StorageSettings | None = None) -> list[Check]:
    """Every check for ``url``; when the database cannot be reached, only that one."""
    import sqlalchemy

    settings = settings or StorageSettings()
    path = sqlite_path(url)
    if path is not None and not path.exists():  # connecting would create an empty file
        return [Check("reach", "ok", f"{path} does not exist yet; `launch hpo` creates it")]
    kwargs = engine_kwargs(url, settings)
    kwargs.pop("pool_size", None), kwargs.pop("max_overflow", None)
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **kwargs)
        with engine.connect() as conn:
            checks = [Check("reach", "ok", f"{mask_url(url)} answers")]
            checks.append(_schema_check(url, {**kwargs, "poolclass": sqlalchemy.pool.NullPool},
                                        conn))
            if is_postgres(url):
                checks += _postgres_checks(conn, workers, settings)
            elif workers > SQLITE_MAX_WORKERS:
                checks.append(Check("connections", "warn", f"SQLite with {workers} workers",
                                    "use PostgreSQL for more than a few workers"))
        engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        return [Check("reach", "fail", f"cannot connect to {mask_url(url)}: "
                      f"{scrub(first, url)}", "check the URL, the password and that the "
                      "database is up (and accepts this host)")]
    return checks


def _schema_check(url: str, kwargs: dict[str, Any], conn) -> Check:
    import optuna
    import sqlalchemy

    try:
        current = optuna_schema_version(url, kwargs, conn)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
            RuntimeError) as exc:
        cause = exc.__cause__ or exc  # the driver's error under Optuna's wrapper
        first = (str(getattr(cause, "orig", None) or cause).strip().splitlines() or [""])[0]
        return Check("schema", "fail", f"cannot read the Optuna schema version: "
                     f"{scrub(first, url)}", "check that this database holds Optuna studies, "
                     "or run `optuna storage upgrade --storage URL`")
    return check_schema(current, optuna_head())


def _postgres_checks(conn, workers: int, settings: StorageSettings) -> list[Check]:
    import sqlalchemy

    def scalar(sql: str):
        return conn.execute(sqlalchemy.text(sql)).scalar()

    max_conn = int(scalar("SHOW max_connections"))
    reserved = int(scalar("SHOW superuser_reserved_connections"))
    in_use = int(scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                        "'client backend'"))
    before = datetime.datetime.now(datetime.UTC)
    db_now = scalar("SELECT clock_timestamp()")  # now() is the transaction start
    after = datetime.datetime.now(datetime.UTC)
    skew = (db_now - (before + (after - before) / 2)).total_seconds()
    return [check_connections(max_conn, reserved, in_use, workers, settings), check_skew(skew)]
