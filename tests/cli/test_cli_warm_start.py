"""`launch hpo --warm-start EXPERIMENT`: real launcher and local workers on the embedded SQLite
storage, simulated objective, a stages file of the test's own (one short s1 stage).

The earlier experiment (e1, two non-tiny backbones searched) is made once per module and its
database copied into each test, so every test starts from the same storage.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.history import finished_in_order
from psy_agents.hpo.spec import load_spec
from psy_agents.hpo.warm import RANK_ATTR, project
from tests.cli.test_cli_hpo import launch

STAGES = """[plans]
one = ["s1"]

[stages.s1]
trials = {trials}
epochs = {epochs}
patience = {epochs}
pruner = "none"
"""


def _stages_file(folder: Path, trials: int, epochs: int) -> Path:
    path = folder / f"stages-{trials}-{epochs}.toml"
    path.write_text(STAGES.format(trials=trials, epochs=epochs))
    return path


def _hpo(cwd: Path, experiment: str, stages: Path, *extra: str):
    return launch(["hpo", "--agent", "criteria", "--objective", "simulated", "--plan", "one",
                   "--experiment", experiment, "--stages-file", str(stages), *extra], cwd=cwd)


@pytest.fixture(scope="module")
def old_runs(tmp_path_factory) -> Path:
    """runs/ holding experiment e1: 4 finished trials searching backbones minilm and distil."""
    cwd = tmp_path_factory.mktemp("e1")
    out = _hpo(cwd, "e1", _stages_file(cwd, 4, 2), "--backbone", "minilm", "--backbone", "distil")
    assert out.returncode == 0, out.stderr
    return cwd / "runs"


@pytest.fixture
def cwd(tmp_path, old_runs) -> Path:
    (tmp_path / "runs").mkdir()
    for f in old_runs.glob("optuna.db*"):
        shutil.copy(f, tmp_path / "runs" / f.name)
    return tmp_path


def _url(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'runs' / 'optuna.db'}"


def _study_names(cwd: Path) -> set[str]:
    return {s.study_name for s in open_storage(_url(cwd)).get_all_studies()}


def _ranked_e1(cwd: Path) -> list:
    """e1's COMPLETE trials, best first (ties: the earlier finished)."""
    study, _ = load_spec(open_storage(_url(cwd)), "e1.criteria.s1")
    done = [t for t in finished_in_order(study) if t.state == TrialState.COMPLETE]
    return [done[i] for i in sorted(range(len(done)), key=lambda i: (-done[i].value, i))]


def test_warm_start_on_a_different_space_projects_the_best_configs_and_runs_them_first(cwd):
    # e2 searches tiny only (no `backbone` nor head multiplier, lr 3e-4..3e-3 instead of
    # 1e-5..3e-3) and 4 epochs (an `epochs` parameter e1 lacks): projected, not refused.
    out = _hpo(cwd, "e2", _stages_file(cwd, 5, 4), "--warm-start", "e1",
               "--warm-start-trials", "2")
    assert out.returncode == 0, out.stderr
    assert ("e2.criteria.s1: warm start: queued 2 of the best configurations of "
            "e1.criteria.s1") in out.stderr
    storage = open_storage(_url(cwd))
    study, spec = load_spec(storage, "e2.criteria.s1")
    expected = [project(t.params, spec.search_space)[0] for t in _ranked_e1(cwd)[:2]]
    assert all("backbone" not in p and p["lr"] >= 1e-4 for p in expected)
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert len(trials) == 5 and {t.state for t in trials} == {TrialState.COMPLETE}
    for trial, params in zip(trials[:2], expected, strict=True):
        assert {k: trial.params[k] for k in params} == params
        assert set(trial.params) - set(params) == {"epochs"}  # e1 lacks it: sampled
    assert [t.user_attrs.get(RANK_ATTR) for t in trials] == [0, 1, None, None, None]


def test_warm_start_refuses_in_one_line_a_choice_the_new_space_lacks(cwd):
    out = _hpo(cwd, "e3", _stages_file(cwd, 4, 2), "--backbone", "tiny", "--backbone", "bert",
               "--warm-start", "e1")
    best = _ranked_e1(cwd)[0]
    assert out.returncode == 2
    assert out.stderr == (
        f"error: --warm-start e1: backbone={best.params['backbone']!r} of trial "
        f"#{best.number} of e1.criteria.s1 cannot be projected into e3.criteria.s1, whose "
        "backbone takes tiny, bert — search the same choices as e1 (or hold backbone with "
        "--fix), or warm start from another experiment\n")
    assert _study_names(cwd) == {"e1.criteria.s1"}  # refused before anything was created


def test_warm_start_from_an_unknown_experiment_is_one_line_listing_those_held(cwd):
    out = _hpo(cwd, "e4", _stages_file(cwd, 4, 2), "--warm-start", "nope")
    assert out.returncode == 2
    assert out.stderr == ("error: --warm-start nope: no experiment 'nope' in this storage, "
                          "which holds 1 experiment(s): e1 — pass one of them to "
                          "--warm-start\n")
    assert _study_names(cwd) == {"e1.criteria.s1"}
    assert optuna.load_study(study_name="e1.criteria.s1", storage=_url(cwd)).trials
