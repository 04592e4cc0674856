"""Storage: URL resolution, password masking, engine options, retries, unreachable databases."""

from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy.exc

from psy_agents.errors import StorageError
from psy_agents.hpo import storage as st

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
    assert st.mask_url(url) == masked


def test_scrub_removes_password_from_any_text():
    url = f"postgresql://u:{SECRET}@h/db"
    text = f"could not connect to {url}; password {SECRET} rejected"
    assert SECRET not in st.scrub(text, url)


def test_resolve_url_order_and_sqlite_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert st.resolve_url(None, {}) == "sqlite:///runs/optuna.db"
    assert st.resolve_url(None, {"PSY_STORAGE": "postgresql://h/x"}) == "postgresql://h/x"
    assert st.resolve_url("sqlite:///a/b.db", {"PSY_STORAGE": "postgresql://h/x"}) == \
        "sqlite:///a/b.db"
    assert list(tmp_path.iterdir()) == []  # resolving creates nothing; open_storage does
    st.open_storage("sqlite:///a/b.db", create_schema=True)
    assert (tmp_path / "a" / "b.db").is_file()


def test_engine_kwargs_postgres_has_pre_ping_pool_keepalives():
    kw = st.engine_kwargs("postgresql+psycopg2://h/db", st.StorageSettings())
    assert kw["pool_pre_ping"] is True and kw["pool_size"] == 2
    assert kw["connect_args"]["keepalives"] == 1 and kw["connect_args"]["connect_timeout"] == 5
    assert st.engine_kwargs("sqlite:///x.db", st.StorageSettings())["connect_args"]["timeout"] > 0


def test_settings_defaults_env_and_validation():
    assert st.StorageSettings().heartbeat_interval_s >= 60
    assert st.StorageSettings().grace_period_s >= 180
    s = st.StorageSettings.from_env({"PSY_HEARTBEAT_INTERVAL_S": "1", "PSY_GRACE_PERIOD_S": "3"})
    assert (s.heartbeat_interval_s, s.grace_period_s) == (1, 3)
    with pytest.raises(StorageError, match="inconsistent"):
        st.StorageSettings(heartbeat_interval_s=10, grace_period_s=5)
    with pytest.raises(StorageError, match="PSY_GRACE_PERIOD_S='x' is not a whole number"):
        st.StorageSettings.from_env({"PSY_GRACE_PERIOD_S": "x"})


def test_unreachable_postgres_is_one_line_without_password():
    url = f"postgresql+psycopg2://u:{SECRET}@127.0.0.1:1/nope"
    started = time.monotonic()
    with pytest.raises(StorageError) as exc:
        st.open_storage(url, st.StorageSettings())
    assert time.monotonic() - started < 10.5  # connect_timeout bound (port 1 refuses at once)
    msg = exc.value.format_message()
    assert msg.startswith("cannot use storage postgresql+psycopg2://u:***@127.0.0.1:1/nope")
    assert SECRET not in msg and "\n" not in msg


def test_worker_side_open_without_schema_says_create_studies(pg_url):
    with pytest.raises(StorageError, match="has no psy-agents schema"):
        st.open_storage(pg_url, st.StorageSettings())


def test_create_schema_once_is_idempotent_on_postgres(pg_url):
    st.create_schema_once(pg_url)
    storage = st.create_schema_once(pg_url)
    assert storage.get_all_studies() == []
    assert st.open_storage(pg_url).get_all_studies() == []


def test_sqlite_is_wal_and_missing_file_is_clear(tmp_path):
    db = tmp_path / "runs" / "optuna.db"
    with pytest.raises(StorageError, match="no storage file at"):
        st.open_storage(f"sqlite:///{db}")
    st.create_schema_once(f"sqlite:///{db}")
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

    assert st.with_retry(flaky, what="t", sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2


def test_with_retry_gives_up_and_never_retries_real_errors():
    sleeps = []
    with pytest.raises(sqlalchemy.exc.OperationalError):
        st.with_retry(lambda: (_ for _ in ()).throw(_blip()), what="t", attempts=3,
                      sleep=sleeps.append)
    assert len(sleeps) == 2
    with pytest.raises(KeyError):
        st.with_retry(lambda: {}["x"], what="t", sleep=sleeps.append)
    assert len(sleeps) == 2
