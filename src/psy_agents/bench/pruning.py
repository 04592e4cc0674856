"""Runs ``launch bench pruning``: one stage with and without its pruner, same seeds.

Both arms are real studies run by real ``launch worker`` processes (real training on the
tiny model by default, or the simulated objective). Each arm reports the epochs its trials
computed, the study's best value and its wall time; :func:`compare` turns the two into the
epochs ratio and the regret (how far below the unpruned best the pruned search ended).
Single runs vary widely, so :func:`run_seeds` repeats both arms for several seeds and
:func:`summarize` gives each figure's mean and standard deviation over them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Sequence
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
    """One finished study: ``epochs`` computed over all its trials, its best value, and the
    seconds its workers ran (``wall_s``)."""

    pruner: str
    trials: int
    epochs: int
    best_value: float
    wall_s: float = 0.0


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
    # The simulated curves span the stage cap and stop by the stage's patience, as training.
    sim = {"epoch_s": spec.epoch_s, "seed": spec.seed, "epochs": stage.epochs,
           "patience": stage.patience}
    o = CampaignOverrides(objective=spec.objective, backbones=(spec.backbone,),  # type: ignore[arg-type]
                          base_seed=spec.seed, sim=sim, train=dict(spec.train))
    camp = create_campaign(spec.storage_url, experiment=experiment, agents=[spec.agent],
                           stages=(stage,), n_workers=spec.n_workers, overrides=o,
                           data_dir=spec.data_dir)
    return camp.study_names[0]


def _arm(storage_url: str, study_name: str, pruner: str, wall_s: float) -> Arm:
    study, _ = load_spec(open_storage(storage_url), study_name)
    finished = study.get_trials(deepcopy=False, states=finished_states())
    values = [t.value for t in finished if t.value is not None]
    return Arm(pruner, len(finished), sum(int(t.user_attrs.get("epochs_run", 0)) for t in finished),
               max(values) if values else float("nan"), wall_s)


def run_arms(spec: PruningSpec, experiment: str) -> tuple[Arm, Arm]:
    """Run the stage's pruner arm, then the no-pruner arm; returns (pruned, unpruned)."""
    pruner = spec.stage.pruner if spec.stage.pruner != "none" else "asha"
    arms = []
    for name in (pruner, "none"):
        exp = f"{experiment}-{name}"
        study = _create(spec, exp, name)
        wall, _ = run_workers(study, spec.storage_url, spec.n_workers, spec.runs_dir / exp,
                              runs_dir=spec.runs_dir, data_dir=spec.data_dir,
                              timeout_s=6 * 3600)
        arms.append(_arm(spec.storage_url, study, name, wall))
    return arms[0], arms[1]


@dataclass(frozen=True)
class SeedRun:
    """Both arms of one seed and their comparison."""

    seed: int
    pruned: Arm
    unpruned: Arm
    figures: dict[str, float | bool]


def run_seeds(spec: PruningSpec, experiment: str, seeds: Sequence[int],
              on_seed: Callable[[SeedRun], None] | None = None) -> list[SeedRun]:
    """Both arms for each seed (the sampler's base seed and the simulated objective's seed;
    the two arms of a seed share it). ``on_seed`` sees each seed's run as it ends."""
    runs = []
    for seed in seeds:
        pruned, unpruned = run_arms(dataclasses.replace(spec, seed=seed), f"{experiment}-s{seed}")
        run = SeedRun(seed, pruned, unpruned, compare(pruned, unpruned))
        if on_seed is not None:
            on_seed(run)
        runs.append(run)
    return runs


FIGURES: dict[str, Callable[[SeedRun], float]] = {
    "epochs_ratio": lambda r: float(r.figures["epochs_ratio"]),
    "regret": lambda r: float(r.figures["regret"]),
    "pruned_wall_s": lambda r: r.pruned.wall_s,
    "unpruned_wall_s": lambda r: r.unpruned.wall_s,
    "pruned_epochs": lambda r: float(r.pruned.epochs),
    "unpruned_epochs": lambda r: float(r.unpruned.epochs),
}


def summarize(runs: Sequence[SeedRun]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation (0 for one seed) of each of ``FIGURES``."""
    out = {}
    for name, get in FIGURES.items():
        values = [get(r) for r in runs]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[name] = {"mean": statistics.fmean(values), "std": std}
    return out


def meets_goal(summary: dict[str, dict[str, float]]) -> bool:
    """The issue's goal on the means: epochs ratio <= 0.30 and regret <= 1 %."""
    ratio, regret = summary["epochs_ratio"]["mean"], summary["regret"]["mean"]
    return not math.isnan(ratio) and ratio <= 0.30 and regret <= 0.01
