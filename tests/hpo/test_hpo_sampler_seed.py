"""A restarted worker must not replay the start-up configs it already tried."""

from __future__ import annotations

import optuna

from psy_agents.hpo.worker import sampler_seed


def _first_params(seed: int) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))
    trial = study.ask()
    return {"lr": trial.suggest_float("lr", 1e-5, 1e-2, log=True),
            "bs": trial.suggest_categorical("bs", [8, 16, 32, 64])}


def test_seed_is_deterministic_per_index_and_history():
    assert sampler_seed(0, 3, 0) == sampler_seed(0, 3, 0)
    assert len({sampler_seed(0, i, 0) for i in range(64)}) == 64


def test_restart_with_same_index_samples_other_configs():
    fresh = _first_params(sampler_seed(0, 1, 0))
    assert fresh == _first_params(sampler_seed(0, 1, 0))  # same history -> same draws
    restarted = _first_params(sampler_seed(0, 1, 5))      # 5 trials exist when it rejoins
    assert restarted != fresh


def test_each_stage_of_a_chain_starts_from_other_draws():
    s0 = _first_params(sampler_seed(0, 0, 0, "exp.criteria.s0"))
    s1 = _first_params(sampler_seed(0, 0, 0, "exp.criteria.s1"))
    assert s0 != s1
