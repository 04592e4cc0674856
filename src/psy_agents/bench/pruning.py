"""Runs ``launch bench pruning``: one stage with and without its pruner, same seeds.

Both arms are real studies run by real ``launch worker`` processes (real training on the
tiny model by default, or the simulated objective). Each arm reports the epochs its trials
computed and the study's best value; :func:`compare` turns the two into the epochs ratio and
the regret (how far below the unpruned best the pruned search ended).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from psy_agents.bench.storage import run_workers
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.history import finished_states
from psy_agents.hpo.spec import CampaignOverrides, create_campaign, load_spec
from psy_agents.hpo.stages import StageConfig

AGENT = "criteria"


@dataclass(frozen=True)
class Arm:
    """One finished study: ``epochs`` computed over all its trials, its best value."""

    pruner: str
    trials: int
    epochs: int
    best_value: float


def compare(pruned: Arm, unpruned: Arm) -> dict[str, float | bool]:
    """Epochs ratio (pruned / unpruned) and regret ((unpruned best − pruned best) / |unpruned
    best|; <= 0 means pruning found as good or better).

    Raises:
        ValueError: the unpruned arm computed no epoch or has a best value of 0.
    """
    if unpruned.epochs <= 0:
        raise ValueError(f"The value of `unpruned.epochs` is {unpruned.epochs}, but must be >= 1")
    if unpruned.best_value == 0:
        raise ValueError("The value of `unpruned.best_value` is 0, but must be non-zero "
                         "(the regret is relative to it)")
    ratio = pruned.epochs / unpruned.epochs
    regret = (unpruned.best_value - pruned.best_value) / abs(unpruned.best_value)
    return {"epochs_ratio": ratio, "regret": regret,
            "within_1pct": regret <= 0.01, "epochs_at_most_30pct": ratio <= 0.30}


@dataclass(frozen=True)
class PruningSpec:
    storage_url: str
    stage: StageConfig
    agent: str = AGENT
    train: dict = dataclasses.field(default_factory=dict)  # fixed TrainConfig fields
    n_workers: int = 1
    objective: str = "train"
    backbone: str = "tiny"
    data_dir: Path = Path("data/sample")
    seed: int = 0
    epoch_s: float = 0.05
    runs_dir: Path = Path("runs/bench")


def _create(spec: PruningSpec, experiment: str, pruner: str) -> str:
    stage = dataclasses.replace(spec.stage, pruner=pruner)
    o = CampaignOverrides(objective=spec.objective, backbones=(spec.backbone,),  # type: ignore[arg-type]
                          base_seed=spec.seed,
                          sim={"epoch_s": spec.epoch_s, "seed": spec.seed},
                          train=dict(spec.train))
    camp = create_campaign(spec.storage_url, experiment=experiment, agents=[spec.agent],
                           stages=(stage,), n_workers=spec.n_workers, overrides=o,
                           data_dir=spec.data_dir)
    return camp.study_names[0]


def _arm(storage_url: str, study_name: str, pruner: str) -> Arm:
    study, _ = load_spec(open_storage(storage_url), study_name)
    finished = study.get_trials(deepcopy=False, states=finished_states())
    values = [t.value for t in finished if t.value is not None]
    return Arm(pruner, len(finished), sum(int(t.user_attrs.get("epochs_run", 0)) for t in finished),
               max(values) if values else float("nan"))


def run_arms(spec: PruningSpec, experiment: str) -> tuple[Arm, Arm]:
    """Run the stage's pruner arm, then the no-pruner arm; returns (pruned, unpruned)."""
    pruner = spec.stage.pruner if spec.stage.pruner != "none" else "asha"
    arms = []
    for name in (pruner, "none"):
        exp = f"{experiment}-{name}"
        study = _create(spec, exp, name)
        run_workers(study, spec.storage_url, spec.n_workers, spec.runs_dir / exp,
                    runs_dir=spec.runs_dir, data_dir=spec.data_dir, timeout_s=6 * 3600)
        arms.append(_arm(spec.storage_url, study, name))
    return arms[0], arms[1]
