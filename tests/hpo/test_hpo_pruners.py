"""Per-stage pruner settings, and the `max` stage leaving trial length to the pruner."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.pruners import make_pruner
from psy_agents.hpo.spec import CampaignOverrides, create_campaign, load_spec
from psy_agents.hpo.stages import PACKAGE_STAGES, StageConfig, load_stages

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _first_pruned_step(pruner, leaders: int, steps: int = 40) -> int | None:
    """Run ``leaders`` trials reporting 1.0 at every step (asking the pruner, as a worker
    does), then one reporting 0.0: the first step at which that one is pruned (None: never)."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for value in [1.0] * leaders + [0.0]:
        trial = study.ask()
        for step in range(steps):
            trial.report(value, step)
            if trial.should_prune():
                return step if value == 0.0 else -1  # -1: a leader was pruned
        study.tell(trial, value)
    return None


@pytest.mark.parametrize(("min_resource", "factor"), [(1, 3), (5, 3), (10, 4)])
def test_asha_prunes_first_at_the_stages_min_resource(min_resource, factor):
    stage = StageConfig(trials=5, epochs=40, pruner="asha", min_resource=min_resource,
                        reduction_factor=factor)
    # Optuna's first rung is step `min_resource` (0-based epochs): never earlier.
    assert _first_pruned_step(make_pruner(stage), leaders=3) == min_resource


def test_asha_bootstrap_count_prunes_the_first_trials_at_a_rung():
    # Optuna cannot pause a trial until enough others reach its rung, so a trial that
    # arrives before `bootstrap_count` others is pruned: here the very first one.
    stage = StageConfig(trials=5, epochs=40, pruner="asha", min_resource=2, bootstrap_count=1)
    assert _first_pruned_step(make_pruner(stage), leaders=1) == -1
    assert _first_pruned_step(make_pruner(dataclasses.replace(stage, bootstrap_count=0)),
                              leaders=1) == 2


def test_hyperband_gets_the_stages_rungs_and_cap():
    stage = StageConfig(trials=5, epochs=60, pruner="hyperband", min_resource=5,
                        reduction_factor=4, bootstrap_count=2)
    pruner = make_pruner(stage)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor,
            pruner._bootstrap_count) == (5, 60, 4, 2)
    none = make_pruner(dataclasses.replace(stage, pruner="none"))
    assert isinstance(none, optuna.pruners.NopPruner)


def test_the_max_stage_samples_no_epochs_and_runs_trials_to_the_cap(tmp_path):
    (stage,) = load_stages(["max"], PACKAGE_STAGES)
    assert stage.sample_epochs is False and stage.pruner != "none"
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    o = CampaignOverrides(objective="simulated", trials=3)
    camp = create_campaign(url, experiment="m", agents=["criteria"], stages="max",
                           n_workers=1, overrides=o, stages_file=PACKAGE_STAGES)
    _, spec = load_spec(open_storage(url), camp.all_studies[0])
    names = {p["name"] for p in spec.space}
    assert "epochs" not in names and "lr" in names
    # The same stage with sampled epochs searches them (the setting, not the cap, decides).
    sampled = dataclasses.replace(stage, sample_epochs=True)
    camp = create_campaign(url, experiment="s", agents=["criteria"], stages=[sampled],
                           n_workers=1, overrides=o)
    _, spec = load_spec(open_storage(url), camp.all_studies[0])
    assert "epochs" in {p["name"] for p in spec.space}
