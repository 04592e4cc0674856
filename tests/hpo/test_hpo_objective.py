"""The objective: error classification, TrainConfig assembly, and a real failing worker."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
import torch
from optuna.trial import TrialState

from psy_agents.errors import ConfigError, DataError, Preempted, TrialFailed
from psy_agents.hpo import spaces
from psy_agents.hpo.objective import Objective, classify
from psy_agents.hpo.spec import CampaignOverrides, StudySpec, create_campaign
from psy_agents.hpo.stages import StageConfig
from psy_agents.settings import Settings

STAGE = StageConfig(name="s1", trials=4, epochs=5, patience=2, pruner="asha",
                    train_fraction=0.5)


@pytest.mark.parametrize(("exc", "action"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "prune"),
    (MemoryError(), "prune"),
    (ConfigError("bad stride", "fix it"), "fail"),
    (ValueError("The value of `stride` is 200"), "fail"),
    (RuntimeError("shape mismatch"), "fail"),
    (DataError("no data", "give data"), "raise"),
    (Preempted("stop"), "raise"),
    (sqlalchemy.exc.OperationalError("x", {}, Exception("server closed")), "raise"),
])
def test_classify(exc, action):
    assert classify(exc)[0] == action


def _spec(**kw) -> StudySpec:
    space = spaces.agent_space("criteria", ("tiny",), STAGE.epochs)
    return StudySpec(experiment="e", agent="criteria", stage=STAGE.to_dict(),
                     chain=("e.criteria.s1",), budget=4, objective="train",
                     space=tuple(spaces.space_to_json(space)), **kw)


class Raising(Objective):
    def __init__(self, errors, **kw):
        super().__init__(_spec(), _spec().search_space, study_name="e.criteria.s1",
                         worker_index=0, stop=threading.Event(), settings=Settings(), **kw)
        self.errors = list(errors)

    def _run(self, trial, params, original):
        raise self.errors.pop(0)


def test_objective_turns_oom_into_pruned_and_bad_config_into_failed_with_reasons():
    study = optuna.create_study(direction="maximize")
    objective = Raising([torch.cuda.OutOfMemoryError("CUDA out of memory"),
                         ConfigError("stride too large", "lower it")])
    study.optimize(objective, n_trials=2, catch=(TrialFailed,))  # the loop goes on
    oom, bad = study.trials
    assert oom.state == TrialState.PRUNED
    assert oom.user_attrs["note"].startswith("out of memory: OutOfMemoryError: CUDA out of")
    assert bad.state == TrialState.FAIL
    assert bad.user_attrs["fail_reason"] == "ConfigError: stride too large — lower it"
    assert oom.user_attrs["original_trial"] == 0 and bad.user_attrs["worker_index"] == 0


def test_train_config_layers_stage_defaults_params_and_seed():
    obj = Objective(_spec(train_defaults={"device": "cpu", "batch_size": 4}, base_seed=100),
                    _spec().search_space, study_name="e.criteria.s1", worker_index=3,
                    stop=threading.Event(), settings=Settings())
    cfg = obj.train_config({"lr": 3e-4, "batch_size": 16}, seed=107)
    assert (cfg.agent, cfg.backbone, cfg.epochs, cfg.patience) == ("criteria", "tiny", 5, 2)
    assert cfg.train_fraction == 0.5 and cfg.device == "cpu"
    assert cfg.lr == 3e-4 and cfg.batch_size == 16 and cfg.seed == 107
    with pytest.raises(ConfigError, match="stride"):
        obj.train_config({"max_length": 64, "stride": 48}, seed=0)


def test_the_stage_s_training_settings_reach_run_training(monkeypatch, tmp_path):
    """checkpoint_every, eval_every and compile are stage settings: the objective hands
    them to run_training, not to the TrainConfig."""
    from psy_agents.hpo import objective as objective_mod

    stage = {**STAGE.to_dict(), "checkpoint_every": 2, "eval_every": 3, "compile": True}
    obj = Objective(dataclasses.replace(_spec(), stage=stage), _spec().search_space, study_name="e.criteria.s1", worker_index=0,
                    stop=threading.Event(), settings=Settings(runs_dir=tmp_path))
    obj._data = object()
    seen: dict = {}
    monkeypatch.setattr(objective_mod, "run_training",
                        lambda cfg, data, **kw: seen.update(kw, epochs=cfg.epochs))
    obj._train({"lr": 1e-3}, 0, tmp_path / "ckpt", report=None)
    assert (seen["checkpoint_every"], seen["eval_every"], seen["compile_encoder"],
            seen["epochs"]) == (2, 3, True, 5)


def test_fixed_params_are_not_searched(tmp_path):
    camp = create_campaign(f"sqlite:///{tmp_path}/o.db", experiment="e", agents=["criteria"],
                           stages=(STAGE,), n_workers=1,
                           overrides=CampaignOverrides(objective="simulated",
                                                       train={"max_length": 128}))
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.spec import load_spec

    spec = load_spec(open_storage(f"sqlite:///{tmp_path}/o.db"), camp.study_names[0])[1]
    assert "max_length" not in {p.name for p in spec.search_space}


@pytest.mark.slow  # ~10 s idle, 25-35 s on the shared 2-core box
def test_worker_survives_bad_trials_but_stops_on_a_config_that_always_fails(
        tmp_path, sample_dir):
    url = f"sqlite:///{tmp_path}/runs/optuna.db"
    o = CampaignOverrides(objective="train", train={"max_length": 64, "stride": 40})  # stride >= max_length / 2
    camp = create_campaign(url, experiment="e", agents=["criteria"], stages=(STAGE,),
                           n_workers=1, overrides=o, data_dir=sample_dir)
    launch = Path(sys.executable).parent / "launch"
    out = subprocess.run([str(launch), "worker", "--study", camp.study_names[0], "--index", "0",
                          "--storage", url, "--data-dir", str(sample_dir)], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count(" FAIL ") == 10  # one log line per failed trial, then it stops
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 10 trials of e.criteria.s1 failed in a row; last reason: "
                           "ConfigError: trial params of e.criteria.s1: The value of `stride`")
