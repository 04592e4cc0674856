"""A campaign that grows: `launch hpo` run again on a running experiment, on the real Postgres.

The first launch (2 local workers, budget 6) is still running when the second one (3 more
workers, --trials 10) joins it: the second raises the budget, and the first launch's
workers, which read the budget at every claim, go on with it. Simulated objective (per-epoch
sleeps), so the two launches overlap for a few seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.spec import BUDGET_HISTORY_ATTR
from tests.cli.test_cli_hpo import launch

pytestmark = pytest.mark.postgres
REPO = Path(__file__).resolve().parents[2]
NAME = "grow.criteria.s1"
BASE = ["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
        "--epochs", "20", "--experiment", "grow"]


def _study_state(url: str) -> dict:
    """Every study's user attrs and trial count: what a refused launch must leave as is."""
    storage = open_storage(url)
    return {s.study_name: (dict(s.user_attrs), len(storage.get_all_trials(s._study_id)))
            for s in storage.get_all_studies()}


def _finished(url: str) -> int:
    """Finished trials so far, read with plain SQL: opening an Optuna storage here would
    create the schema while the first launcher creates it, a race PostgreSQL reports as a
    duplicate key (the launcher creates it once so that workers never race)."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED')")).scalar()
    except sqlalchemy.exc.ProgrammingError:
        return 0  # no schema yet
    finally:
        engine.dispose()


def test_a_second_launch_adds_workers_and_raises_the_budget_then_a_change_is_refused(
        tmp_path, pg_url):
    env = {**os.environ, "PSY_DATA_DIR": str(REPO / "data" / "sample"), "PSY_STORAGE": pg_url}
    first = subprocess.Popen(
        [sys.executable, "-m", "psy_agents.cli.main", *BASE, "--workers", "2", "--trials", "6"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _finished(pg_url) < 1 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    second = launch([*BASE, "--workers", "3", "--trials", "10"], cwd=tmp_path,
                    env={"PSY_STORAGE": pg_url})
    out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert f"{NAME}: budget raised from 6 to 10" in second.stderr

    study = optuna.load_study(study_name=NAME, storage=pg_url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 10, [t.state.name for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    history = study.user_attrs[BUDGET_HISTORY_ATTR]
    assert [(h["budget"], h["workers"]) for h in history] == [(6, 2), (10, 3)]

    before = _study_state(pg_url)
    refused = launch([*BASE, "--workers", "3", "--fix", "dropout=0.1"], cwd=tmp_path,
                     env={"PSY_STORAGE": pg_url})
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: study {NAME} already exists with different "
                                     "settings (differs in: space, train_defaults) — ")
    assert refused.stderr.count("\n") == 1, refused.stderr
    lower = launch([*BASE, "--trials", "8"], cwd=tmp_path, env={"PSY_STORAGE": pg_url})
    assert lower.returncode == 2
    assert lower.stderr.startswith(f"error: --trials 8 would lower the budget of study {NAME} "
                                   "from 10: a budget can only grow — "), lower.stderr
    assert _study_state(pg_url) == before
