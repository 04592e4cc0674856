"""The "simulated" objective: a benchmark and test workload, never a stand-in for training.

A study whose spec says ``objective = "simulated"`` runs this instead of training. It behaves
like training where the HPO engine can tell: one ``report`` per epoch, a checkpoint per
epoch (so a retried trial resumes), epoch durations drawn from a seeded heavy-tailed
(Pareto) distribution, and values that are a deterministic function of the params and the
epoch plus seeded noise — good configurations rise higher, so pruning has signal. Used by
the engine's tests and by ``launch bench storage``. Settings (``spec.sim``): ``epoch_s``
(mean epoch seconds, default 0.05), ``seed`` (default 0), ``noise`` (default 0.01).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from psy_agents.errors import Preempted
from psy_agents.hpo.spaces import Param, Space, Value

CHECKPOINT_FILE = "simulated.json"
_PARETO_ALPHA = 2.5  # tail index: a few epochs take several times the mean, as on real GPUs


@dataclass(frozen=True)
class SimOutcome:
    best_value: float
    epochs_run: int
    resumed_from_epoch: int | None
    stopped: str  # "completed" | "pruned"


def _position(p: Param, value: Value) -> float:
    """Where ``value`` sits in ``p``'s range, in [0, 1] (log-aware)."""
    if p.kind == "categorical":
        return p.choices.index(value) / max(1, len(p.choices) - 1) if value in p.choices else 0.5
    lo, hi, v = float(p.low), float(p.high), float(value)
    if p.log:
        lo, hi, v = math.log(lo), math.log(hi), math.log(v)
    return 0.5 if hi == lo else (v - lo) / (hi - lo)


def quality(params: Mapping[str, Value], space: Space, seed: int) -> float:
    """Final quality in (0, 1]: a smooth bump around a seeded optimum per parameter."""
    dist = 0.0
    for p in space:
        if p.name in params:
            target = random.Random(f"{seed}:{p.name}").random()
            dist += (_position(p, params[p.name]) - target) ** 2
    return math.exp(-3.0 * dist / max(1, len(space)))


def epoch_value(params: Mapping[str, Value], space: Space, epoch: int, sim: Mapping) -> float:
    """The value reported after ``epoch`` (0-based): a learning curve towards the quality."""
    seed = int(sim.get("seed", 0))
    key = json.dumps(dict(params), sort_keys=True, default=str)
    # run_seed (refit seeds) and split (test vs val) change only the noise, as in training.
    salt = f"{sim.get('run_seed', 0)}:{sim.get('split', 'val')}"
    noise = random.Random(f"{seed}:{key}:{epoch}:{salt}").gauss(0.0, float(sim.get("noise", 0.01)))
    return quality(params, space, seed) * (1.0 - 0.8 * math.exp(-(epoch + 1) / 2.0)) + noise


def epoch_seconds(params: Mapping[str, Value], epoch: int, sim: Mapping) -> float:
    """Seeded heavy-tailed duration of one epoch, with mean ``epoch_s``."""
    seed = int(sim.get("seed", 0))
    key = json.dumps(dict(params), sort_keys=True, default=str)
    draw = random.Random(f"{seed}:{key}:{epoch}:t").paretovariate(_PARETO_ALPHA)
    mean = _PARETO_ALPHA / (_PARETO_ALPHA - 1)
    return float(sim.get("epoch_s", 0.05)) * draw / mean


def _load(ckpt_dir: Path) -> list[float]:
    path = ckpt_dir / CHECKPOINT_FILE
    return json.loads(path.read_text())["values"] if path.exists() else []


def _save(ckpt_dir: Path, values: list[float]) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_dir / f".{CHECKPOINT_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"epoch": len(values) - 1, "values": values}))
    os.replace(tmp, ckpt_dir / CHECKPOINT_FILE)  # atomic: a kill never leaves half a file


def run_simulated(params: Mapping[str, Value], space: Space, *, epochs: int, sim: Mapping,
                  checkpoint_dir: Path, report: Callable[[float, int], bool],
                  wait: Callable[[float], bool]) -> SimOutcome:
    """Run the simulated trial; resumes after the last epoch in ``checkpoint_dir``.

    Epochs restored from the checkpoint are re-reported (the retried trial is a new Optuna
    trial whose pruner needs the history) but not re-run. ``wait(seconds)`` sleeps and
    returns True when the worker was asked to stop.

    Raises:
        Preempted: ``wait`` reported a stop request (the checkpoint holds the last epoch).
    """
    values = _load(checkpoint_dir)
    resumed = len(values) - 1 if values else None
    for epoch, value in enumerate(values):
        if report(value, epoch):
            return SimOutcome(max(values[: epoch + 1]), 0, resumed, "pruned")
    ran = 0
    for epoch in range(len(values), epochs):
        if wait(epoch_seconds(params, epoch, sim)):
            raise Preempted(f"stop requested during epoch {epoch}")
        values.append(epoch_value(params, space, epoch, sim))
        ran += 1
        _save(checkpoint_dir, values)
        if report(values[-1], epoch):
            return SimOutcome(max(values), ran, resumed, "pruned")
    return SimOutcome(max(values), ran, resumed, "completed")
