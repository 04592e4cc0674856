"""Stage plans (``launch/stages.toml``): which studies an agent's chain has and how each runs.

Two plans ship: ``multi`` = s0 sanity -> s1 coarse -> s2 fine (narrowed from s1) -> refit,
and ``max`` = one maximal stage with the original budgets. They are one engine with two
plans. The launcher reads the file once and copies the stage settings into each study's
spec; workers read only the database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from psy_agents.config import from_mapping, read_toml
from psy_agents.errors import ConfigError

PACKAGE_STAGES = Path(__file__).resolve().parents[3] / "launch" / "stages.toml"


@dataclass(frozen=True)
class StageConfig:
    """One stage. ``trials`` is the study-wide budget (for refit: the number of seeds).

    ``keep_models``: how many best-epoch models of the study's best COMPLETE trials stay on
    disk (0: none); a refit keeps every seed's model instead (see :mod:`psy_agents.hpo.refit`).
    ``checkpoint_every``: a trial's resume checkpoint is written after epochs 0, k, 2k, ...,
    its last epoch, and on a stop request (see :class:`psy_agents.training.checkpoint.EpochSaver`).
    """

    name: str = ""
    trials: int = 0
    trials_per_agent: dict[str, int] = field(default_factory=dict)
    seeds: int = 0
    epochs: int = 1
    patience: int = 1
    pruner: Literal["none", "asha", "hyperband"] = "none"
    train_fraction: float = 1.0
    narrow_from: str = ""
    top_k: int = 10
    margin: float = 0.15
    refit_from: str = ""
    keep_models: int = 3
    checkpoint_every: int = 1
    # Trial length: True samples `epochs` in ceil(E/2)..E (stages of 4+ epochs); False runs
    # every trial to the `epochs` cap and leaves the stopping to the pruner and patience.
    sample_epochs: bool = True
    # Pruner settings (asha and hyperband): the first rung's step (0-based epoch), the rung
    # ratio, and (asha) bootstrap_count: Optuna prunes the first trials to reach a rung
    # until that many have reported there (it prunes them, it does not hold them).
    min_resource: int = 1
    reduction_factor: int = 3
    bootstrap_count: int = 0
    # Warm start: the source stage's (narrow_from) best `warm_start` configurations are
    # enqueued, projected into this stage's space, before the sampler proposes any.
    warm_start: int = 0
    # Plateau stop: after this many finished trials in a row without a gain of at least
    # `min_gain` over the best value, the stage takes no new trials (0: off).
    stop_after_trials_without_gain: int = 0
    min_gain: float = 0.0
    # Evaluate on the eval split every k epochs and after the last (pruners and patience
    # read only evaluated epochs; 1: every epoch).
    eval_every: int = 1
    # Compile the encoder with torch.compile (opt-in; see README "The training step").
    compile: bool = False

    def __post_init__(self) -> None:
        checks = [("epochs", self.epochs >= 1, ">= 1"), ("patience", self.patience >= 1, ">= 1"),
                  ("top_k", self.top_k >= 1, ">= 1"), ("margin", self.margin >= 0, ">= 0"),
                  ("train_fraction", 0 < self.train_fraction <= 1, "in (0, 1]"),
                  ("keep_models", self.keep_models >= 0, ">= 0"),
                  ("checkpoint_every", self.checkpoint_every >= 1, ">= 1"),
                  ("min_resource", self.min_resource >= 1, ">= 1"),
                  ("reduction_factor", self.reduction_factor >= 2, ">= 2"),
                  ("bootstrap_count", self.bootstrap_count >= 0, ">= 0"),
                  ("warm_start", self.warm_start >= 0, ">= 0"),
                  ("stop_after_trials_without_gain", self.stop_after_trials_without_gain >= 0,
                   ">= 0 (0: off)"),
                  ("min_gain", self.min_gain >= 0, ">= 0"),
                  ("eval_every", self.eval_every >= 1, ">= 1")]
        if self.refit_from:
            checks.append(("seeds", self.seeds >= 1, ">= 1 for a refit stage"))
            # Refit never stops early: that would select an epoch on the test split.
            checks.append(("patience", self.patience >= self.epochs,
                           f">= epochs ({self.epochs}) for a refit stage"))
        else:
            checks.append(("trials", self.trials >= 1 or bool(self.trials_per_agent), ">= 1"))
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"The value of `{name}` is {getattr(self, name)!r}, "
                                 f"but must be {rule}")

    @property
    def is_refit(self) -> bool:
        return bool(self.refit_from)

    def budget(self, agent: str) -> int:
        """Finished trials (COMPLETE + PRUNED) this stage needs for ``agent``."""
        if self.is_refit:
            return self.seeds
        return int(self.trials_per_agent.get(agent, self.trials))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str) -> StageConfig:
        return from_mapping(cls, data, source=source)


def stages_path(flag: Path | None = None) -> Path:
    """The stages file: ``flag`` (``--stages-file`` / env ``PSY_STAGES``, resolved by the
    CLI) > ./launch/stages.toml > the packaged copy."""
    if flag is not None:
        return flag
    local = Path("launch") / "stages.toml"
    return local if local.is_file() else PACKAGE_STAGES


def load_plan(plan: str, path: Path | None = None) -> tuple[StageConfig, ...]:
    """The stages of ``plan`` in chain order.

    Raises:
        ConfigError: unknown plan (the message lists the valid ones), or see :func:`load_stages`.
    """
    path = stages_path(path)
    plans = read_toml(path).get("plans", {})
    if not isinstance(plans, dict):
        raise ConfigError(f"{path}: `plans` must be a table of plan = [stage, ...] lines",
                          'write it as [plans] with lines like multi = ["s0", "s1"]')
    if plan not in plans:
        raise ConfigError(f"{path}: unknown plan {plan!r}",
                          f"valid plans are: {', '.join(sorted(plans)) or '(none)'}")
    chain = plans[plan]
    if not isinstance(chain, list) or not all(isinstance(n, str) for n in chain):
        raise ConfigError(f"{path}: plan {plan!r} is {chain!r}, but must be a list of stage names",
                          f'write it as {plan} = ["s0", "s1"]')
    return load_stages(chain, path)


def load_stages(names: Sequence[str], path: Path | None = None) -> tuple[StageConfig, ...]:
    """The named stages in the given (chain) order.

    Raises:
        ConfigError: a stage without a [stages.NAME] table, a bad key or value, or a
            narrow/refit source that does not come earlier in ``names``.
    """
    path = stages_path(path)
    tables = read_toml(path).get("stages", {})
    stages: list[StageConfig] = []
    for name in names:
        if name not in tables:
            raise ConfigError(f"{path}: no [stages.{name}] table",
                              f"valid stages are: {', '.join(sorted(tables))}")
        stage = StageConfig.from_dict({"name": name, **tables[name]},
                                      source=f"{path} [stages.{name}]")
        source = stage.narrow_from or stage.refit_from
        if source and source not in [s.name for s in stages]:
            raise ConfigError(f"stage {name!r} builds on {source!r}, which does not come "
                              f"before it in {list(names)}", "reorder the stages or fix the name")
        stages.append(stage)
    return tuple(stages)
