"""The pruner of a stage: Optuna's ASHA (successive halving) or Hyperband, set per stage.

``launch/stages.toml`` sets, per stage, ``pruner``, ``min_resource`` (the first rung:
Optuna compares trials at step ``min_resource``, i.e. after ``min_resource + 1`` epochs, the
step being the 0-based epoch), ``reduction_factor`` (rung k is at step ``min_resource *
factor**k`` and keeps about 1 / factor of the trials that reach it) and ``bootstrap_count``.
Optuna cannot pause a trial until others catch up, so a trial reaching a rung before
``bootstrap_count`` others is *pruned* there, not waited for: keep it 0 unless the first
trials are expendable. The chosen values and the measurements behind them are in that
file's comments (``launch bench pruning --seeds 3``).

Rung values are comparable across trials only when every trial has the same learning-rate
schedule up to each rung: ``training.run.prepare`` schedules over ``cfg.epochs``, so a
stage with ``sample_epochs = false`` (every trial runs to the cap unless pruned or stopped
by patience) gives every trial the same schedule; a sampled ``epochs`` does not.
"""

from __future__ import annotations

from typing import Any

from psy_agents.hpo.stages import StageConfig


def make_pruner(stage: StageConfig) -> Any:
    """The Optuna pruner of ``stage`` (NopPruner for ``pruner = "none"``).

    Hyperband's largest budget is the stage's epoch cap; its brackets follow from
    ``min_resource``, the cap and ``reduction_factor``.
    """
    import optuna

    if stage.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=stage.min_resource, reduction_factor=stage.reduction_factor,
            bootstrap_count=stage.bootstrap_count)
    if stage.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=stage.min_resource, max_resource=stage.epochs,
            reduction_factor=stage.reduction_factor, bootstrap_count=stage.bootstrap_count)
    return optuna.pruners.NopPruner()
