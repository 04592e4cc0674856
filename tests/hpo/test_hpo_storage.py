"""Storage: URL resolution, password masking, engine options, retries. (An unreachable
database, end to end through `launch hpo` and `launch worker`: tests/reliability/
test_storage_faults.py.)

``hpo/storage_url.py`` (``su``) and ``hpo/connect.py`` (``cn``).
"""

from __future__ import annotations

import logging
import sqlite3
import sys

import pytest
import sqlalchemy.exc

from psy_agents.errors import StorageError, TrialFailed
from psy_agents.hpo import connect as cn
from psy_agents.hpo import storage_url as su

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(("url", "masked"), [
    (f"postgresql+psycopg2://optuna:{SECRET}@db.example:5432/hpo",
     "postgresql+psycopg2://optuna:***@db.example:5432/hpo"),
    (f"postgresql://u:{SECRET}@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
    (f"postgresql://u@h/db?password={SECRET}&x=1", "postgresql://u@h/db?password=***&x=1"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
    ("sqlite:///runs/optuna.db", "sqlite:///runs/optuna.db"),
])
def test_mask_url(url, masked):
    assert su.mask_url(url) == masked


def test_scrub_removes_password_from_any_text():
    url = f"postgresql://u:{SECRET}@h/db"
    text = f"could not connect to {url}; password {SECRET} rejected"
    assert SECRET not in su.scrub(text, url)


def test_open_storage_creates_the_sqlite_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cn.open_storage("sqlite:///a/b.db", create_schema=True)
    assert (tmp_path / "a" / "b.db").is_file()


def test_engine_kwargs_postgres_has_pre_ping_pool_keepalives():
    kw = cn.engine_kwargs("postgresql+psycopg2://h/db", cn.StorageSettings())
    assert kw["pool_pre_ping"] is True and kw["pool_size"] == 2
    assert kw["connect_args"]["keepalives"] == 1 and kw["connect_args"]["connect_timeout"] == 5
    assert cn.engine_kwargs("sqlite:///x.db", cn.StorageSettings())["connect_args"]["timeout"] > 0


def test_settings_defaults_and_validation():
    assert cn.StorageSettings().heartbeat_interval_s >= 60
    assert cn.StorageSettings().grace_period_s >= 180
    with pytest.raises(StorageError, match="inconsistent"):
        cn.StorageSettings(heartbeat_interval_s=10, grace_period_s=5)


def test_worker_side_open_without_schema_says_create_studies(pg_url):
    with pytest.raises(StorageError, match="has no psy-agents schema"):
        cn.open_storage(pg_url, cn.StorageSettings())


def test_create_schema_once_is_idempotent_on_postgres(pg_url):
    cn.create_schema_once(pg_url)
    storage = cn.create_schema_once(pg_url)
    assert storage.get_all_studies() == []
    assert cn.open_storage(pg_url).get_all_studies() == []


def test_sqlite_is_wal_and_missing_file_is_clear(tmp_path):
    db = tmp_path / "runs" / "optuna.db"
    with pytest.raises(StorageError, match="no storage file at"):
        cn.open_storage(f"sqlite:///{db}")
    cn.create_schema_once(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _blip():
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed connection"))


def test_with_retry_retries_transient_then_succeeds():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _blip()
        return "ok"

    assert cn.with_retry(flaky, what="t", sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2


def test_with_retry_gives_up_and_never_retries_real_errors():
    sleeps = []
    with pytest.raises(sqlalchemy.exc.OperationalError):
        cn.with_retry(lambda: (_ for _ in ()).throw(_blip()), what="t", attempts=3,
                      sleep=sleeps.append)
    assert len(sleeps) == 2
    with pytest.raises(KeyError):
        cn.with_retry(lambda: {}["x"], what="t", sleep=sleeps.append)
    assert len(sleeps) == 2


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///runs/o.db", "sqlite:///{cwd}/runs/o.db"),
    ("sqlite:///runs/o.db?timeout=5", "sqlite:///{cwd}/runs/o.db?timeout=5"),
    ("sqlite:////abs/o.db", "sqlite:////abs/o.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("postgresql://u@h/db", "postgresql://u@h/db"),
])
def test_absolute_sqlite_pins_only_a_relative_sqlite_path(url, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pinned = su.absolute_sqlite(url)
    assert pinned == expected.format(cwd=tmp_path.resolve())
    assert su.absolute_sqlite(pinned) == pinned  # idempotent
    assert list(tmp_path.iterdir()) == []  # and creates nothing


def test_a_trial_failed_record_keeps_its_line_and_drops_the_traceback():
    cn.quiet_optuna()
    cn.quiet_optuna()  # idempotent: one filter per handler
    handlers = logging.getLogger("optuna").handlers
    assert handlers
    for handler in handlers:
        assert sum(type(f).__name__ == "_TrialFailedInOneLine" for f in handler.filters) == 1

    def record(exc: Exception) -> logging.LogRecord:
        try:
            raise exc
        except Exception:
            return logging.LogRecord("optuna", logging.WARNING, __file__, 1, "Trial 3 failed",
                                     None, sys.exc_info())

    failed, other = record(TrialFailed("lr must be positive")), record(ValueError("bug"))
    for rec in (failed, other):
        assert all(f.filter(rec) for f in handlers[0].filters)
    assert failed.exc_info is None and "Traceback" not in handlers[0].format(failed)
    assert handlers[0].format(failed).endswith("Trial 3 failed")
    assert other.exc_info is not None and "Traceback" in handlers[0].format(other)
