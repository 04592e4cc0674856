"""Shared fixtures: the sample data, a fresh real PostgreSQL database per test, temp run dirs.

PostgreSQL is the real server on 127.0.0.1:5432 (trust auth) started by the machine or by
`.ci/run`; set PSY_TEST_PG to point elsewhere. Each test that asks for `pg_url` gets a
brand-new database, dropped afterwards, so tests never see each other's studies.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"
PG_ADMIN = os.environ.get("PSY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


def _admin_connect():
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN, connect_timeout=5)
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_url():
    """A SQLAlchemy URL to a fresh, empty PostgreSQL database (dropped after the test)."""
    import psycopg2

    name = f"psy_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = _admin_connect()
    except psycopg2.OperationalError as exc:  # pragma: no cover - CI always has Postgres
        pytest.fail(f"PostgreSQL not reachable at {PG_ADMIN}: {exc} (start it, see INFRA/.ci/run)")
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    yield f"{base}/{name}"
    conn = _admin_connect()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()
