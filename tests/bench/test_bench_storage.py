"""`launch bench storage` end to end on the real PostgreSQL: real worker processes, the
simulated objective, a seeded history. Checks the figures' consistency, never their speed."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner

from psy_agents.bench.storage import trial_work_s
from psy_agents.cli.main import cli
from psy_agents.hpo.connect import open_storage

pytestmark = pytest.mark.postgres


def test_bench_storage_runs_the_real_workers_and_writes_consistent_figures(pg_url, tmp_path):
    out = tmp_path / "storage.json"
    res = CliRunner().invoke(cli, [
        "bench", "storage", "--storage", pg_url, "--workers", "2", "--trials", "4",
        "--epochs", "2", "--epoch-s", "0.05", "--history", "5", "--cold-samples", "1",
        "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "scheduling efficiency" in res.output and "process per trial" in res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "bench storage" and data["history"] == 5
    assert 4 <= data["trials"] <= 4 + 2 - 1  # the study-wide budget, + at most N-1 extra
    assert 0 < data["efficiency"] <= 1
    assert data["max_db_connections"] >= 1
    assert data["overhead_p95_ms"] >= data["overhead_p50_ms"] >= 0
    assert data["baselines"]["barrier_computed_s"] > 0

    study = optuna.load_study(study_name=data["study"], storage=open_storage(pg_url))
    trials = study.get_trials()
    seeded = [t for t in trials if t.user_attrs.get("bench_history")]
    run = [t for t in trials if "worker_index" in t.user_attrs]
    assert len(seeded) == 5 and len(run) == data["trials"]
    assert all(t.state.is_finished() for t in trials)
    # the work the command counted is the simulated sleep of the epochs each trial ran
    sim = {"epoch_s": 0.05, "seed": 0}
    work = sum(trial_work_s(t.params, t.user_attrs["epochs_run"], sim) for t in run)
    assert data["work_s"] == pytest.approx(work)
