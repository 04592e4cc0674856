"""`launch bench pruning` end to end with the simulated objective on the real PostgreSQL:
two real studies (pruner / none) with the same seeds; the figures must match the studies."""

from __future__ import annotations

import json
import statistics

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
        "bench", "pruning", *(["--agent", agent, "--fix", "max_length=128"] if agent else []),
        "--objective", "simulated", "--trials", "6", "--epochs", "4", "--seeds", "1",
        "--epoch-s", "0.005", "--storage", pg_url, "--runs-dir", str(tmp_path / "runs"),
        "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    (run,) = data["runs"]
    assert run["pruned"]["pruner"] == "asha" and run["unpruned"]["pruner"] == "none"
    name = agent or "criteria"  # the default agent
    assert data["agent"] == name
    assert data["fixed"] == ({"max_length": 128} if agent else {})
    summaries = {s.study_name for s in optuna.get_all_study_summaries(open_storage(pg_url))}
    (asha,) = [s for s in summaries if s.endswith(f"-asha.{name}.s1")]
    (none,) = [s for s in summaries if s.endswith(f"-none.{name}.s1")]
    epochs, best = _study_epochs(pg_url, asha)
    assert (run["pruned"]["epochs"], run["pruned"]["best_value"]) == (epochs, best)
    epochs_none, best_none = _study_epochs(pg_url, none)
    assert (run["unpruned"]["epochs"], run["unpruned"]["best_value"]) == (epochs_none, best_none)
    assert run["figures"]["epochs_ratio"] == pytest.approx(epochs / epochs_none)
    assert run["figures"]["regret"] == pytest.approx((best_none - best) / abs(best_none))
    assert f"epochs ratio {epochs / epochs_none:.3f}" in res.output
    assert run["pruned"]["wall_s"] > 0 and run["unpruned"]["wall_s"] > 0


def test_bench_pruning_over_seeds_prints_mean_and_spread(pg_url, tmp_path):
    out = tmp_path / "pruning.json"
    res = CliRunner().invoke(cli, [
        "bench", "pruning", "--stage", "max", "--objective", "simulated", "--trials", "5",
        "--epochs", "6", "--patience", "3", "--pruner", "asha", "--min-resource", "2",
        "--reduction-factor", "2", "--no-sample-epochs", "--seeds", "2", "--seed", "7",
        "--epoch-s", "0.001", "--storage", pg_url, "--runs-dir", str(tmp_path / "runs"),
        "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["seeds"] == [7, 8] and [r["seed"] for r in data["runs"]] == [7, 8]
    assert data["stage"]["min_resource"] == 2 and data["stage"]["reduction_factor"] == 2
    assert data["stage"]["sample_epochs"] is False and data["stage"]["patience"] == 3
    # Each seed is its own pair of studies: both arms of a seed share the seed.
    summaries = {s.study_name for s in optuna.get_all_study_summaries(open_storage(pg_url))}
    assert sum(s.endswith(".criteria.max") for s in summaries) == 4
    for key in ("epochs_ratio", "regret"):
        values = [r["figures"][key] for r in data["runs"]]
        assert data["summary"][key]["mean"] == pytest.approx(statistics.fmean(values))
        assert data["summary"][key]["std"] == pytest.approx(statistics.stdev(values))
    ratio = data["summary"]["epochs_ratio"]
    assert f"epochs ratio  {ratio['mean']:.3f} ± {ratio['std']:.3f}" in res.output
    regret = data["summary"]["regret"]
    assert f"regret        {100 * regret['mean']:+.2f}% ± {100 * regret['std']:.2f}%" in res.output
    assert "wall pruned" in res.output and "wall unpruned" in res.output
    # No trial of the no-epochs stage ran past the cap; patience is honoured.
    assert all(0 < r[arm]["epochs"] <= 5 * 6 for r in data["runs"]
               for arm in ("pruned", "unpruned"))
