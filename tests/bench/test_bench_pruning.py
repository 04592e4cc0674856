"""`launch bench pruning` end to end with the simulated objective on the real PostgreSQL:
two real studies (pruner / none) with the same seeds; the figures must match the studies."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner

from psy_agents.cli.main import cli
from psy_agents.hpo.connect import open_storage

pytestmark = pytest.mark.postgres


def _study_epochs(url: str, name: str) -> tuple[int, float]:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    finished = [t for t in study.get_trials() if t.state.is_finished()]
    return sum(t.user_attrs["epochs_run"] for t in finished), study.best_value


@pytest.mark.parametrize("agent", [None, "evidence"])
def test_bench_pruning_compares_a_pruned_and_an_unpruned_study(agent, pg_url, tmp_path):
    out = tmp_path / "pruning.json"
    res = CliRunner().invoke(cli, [
        "bench", "pruning", *(["--agent", agent, "--fix", "max_length=128"] if agent else []), "--objective", "simulated", "--trials", "6", "--epochs", "4",
        "--epoch-s", "0.005", "--storage", pg_url, "--runs-dir", str(tmp_path / "runs"),
        "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["pruned"]["pruner"] == "asha" and data["unpruned"]["pruner"] == "none"
    name = agent or "criteria"  # the default agent
    assert data["agent"] == name
    assert data["fixed"] == ({"max_length": 128} if agent else {})
    summaries = {s.study_name for s in optuna.get_all_study_summaries(open_storage(pg_url))}
    (asha,) = [s for s in summaries if s.endswith(f"-asha.{name}.s1")]
    (none,) = [s for s in summaries if s.endswith(f"-none.{name}.s1")]
    epochs, best = _study_epochs(pg_url, asha)
    assert (data["pruned"]["epochs"], data["pruned"]["best_value"]) == (epochs, best)
    epochs_none, best_none = _study_epochs(pg_url, none)
    assert (data["unpruned"]["epochs"], data["unpruned"]["best_value"]) == (epochs_none, best_none)
    assert data["epochs_ratio"] == pytest.approx(epochs / epochs_none)
    assert data["regret"] == pytest.approx((best_none - best) / abs(best_none))
    assert f"epochs ratio {epochs / epochs_none:.3f}" in res.output
