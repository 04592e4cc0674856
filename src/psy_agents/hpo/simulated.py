"""The "simulated" objective: a benchmark and test workload, never a stand-in for training.

A study whose spec says ``objective = "simulated"`` runs this instead of training. It behaves
like training where the HPO engine can tell: one ``report`` per epoch, a checkpoint per
epoch (so a retried trial resumes), epoch durations drawn from a seeded heavy-tailed
(Pareto) distribution, and values that are a deterministic function of the params and the
epoch plus seeded noise — good configurations end higher, so pruning has signal.

Learning curves (``sim["curve"]``): ``"recorded"`` (default) draws each trial's curve shape
from real curves of the tiny model on the sample (``curves/<agent>.json``, recorded by
``python -m psy_agents.bench.curves``): noisy, with plateaus, late bloomers and runs that
never learn, in the proportions they were recorded (runs that fall back are added when
none was recorded, see ``DIVERGED_SHARE``). The shape (normalised to
its best epoch) is picked by the params and seed, stretched over the trial's epochs and
scaled by the config's quality. ``"smooth"`` is the old single exponential approach, for
tests that want a curve with no surprises. Pruning measured on smooth curves flatters it.

Other settings (``spec.sim``): ``epoch_s`` (mean epoch seconds, default 0.05), ``seed``
(default 0), ``noise`` (per-epoch noise sd, default 0.01), ``epochs`` (the epochs a
recorded shape is stretched over: the stage cap), ``patience`` (stop after this
many epochs without a new best, as training does; default 0: off).
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from psy_agents.errors import ConfigError, Preempted
from psy_agents.hpo.spaces import Param, Space, Value

CHECKPOINT_FILE = "simulated.json"
CURVES_DIR = Path(__file__).resolve().parent / "curves"
_PARETO_ALPHA = 2.5  # tail index: a few epochs take several times the mean, as on real GPUs


@dataclass(frozen=True)
class SimOutcome:
    best_value: float
    epochs_run: int
    resumed_from_epoch: int | None
    stopped: str  # "completed" | "early_stopped" | "pruned"


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


def _param_key(params: Mapping[str, Value]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


# Runs that learn and then fall apart (divergence) are rare in short recordings but are what
# makes a late rung misleading; when none was recorded, this share of the family is made
# from recorded learners by a collapse over their second half (see `_diverged`).
DIVERGED_SHARE = 0.1


def _diverged(shape: Sequence[float]) -> tuple[float, ...]:
    """``shape`` up to its middle, then falling linearly to 30 % of its value by the end."""
    half = len(shape) // 2
    return tuple(v if i < half else v * (1 - 0.7 * (i - half + 1) / (len(shape) - half))
                 for i, v in enumerate(shape))


def falls_back(shape: Sequence[float]) -> bool:
    """A learner that ends below 70 % of its best (a divergent run)."""
    return max(shape) > 0 and shape[-1] < 0.7 * max(shape)


@functools.cache
def recorded_shapes(directory: Path = CURVES_DIR) -> tuple[tuple[float, ...], ...]:
    """Every recorded curve in ``directory``, divided by its best value (a curve that never
    rose above 0 stays all 0: a run that learned nothing), sorted so the family does not
    depend on the file system's order; plus synthetic divergent runs when none was recorded
    (``DIVERGED_SHARE``).

    Raises:
        ConfigError: no recorded curve (the package data is missing).
    """
    shapes = []
    for path in sorted(directory.glob("*.json")):
        for curve in json.loads(path.read_text())["curves"]:
            top = max(curve["values"])
            shapes.append(tuple(v / top if top > 0 else 0.0 for v in curve["values"]))
    if not shapes:
        raise ConfigError(f"no recorded learning curves in {directory}",
                          "reinstall the package or run `python -m psy_agents.bench.curves`")
    learners = [s for s in sorted(shapes) if max(s) > 0]
    if learners and not any(falls_back(s) for s in shapes):
        count = max(1, round(DIVERGED_SHARE * len(shapes)))
        shapes += [_diverged(learners[i % len(learners)]) for i in range(count)]
    return tuple(sorted(shapes))


def _stretched(shape: Sequence[float], epoch: int, horizon: int) -> float:
    """``shape`` (one point per recorded epoch) read at epoch ``epoch`` of a ``horizon``-epoch
    schedule: the same fraction of training, linearly interpolated (0 before the first
    recorded epoch, the last one after the horizon)."""
    x = min((epoch + 1) / horizon * len(shape) - 1, len(shape) - 1)
    lo = math.floor(x)
    below = shape[lo] if lo >= 0 else 0.0
    above = shape[min(lo + 1, len(shape) - 1)]
    return below + (x - lo) * (above - below)


def curve_shape(params: Mapping[str, Value], sim: Mapping) -> tuple[float, ...]:
    """The recorded shape this config's curve follows (seeded by the params and seed)."""
    shapes = recorded_shapes()
    pick = random.Random(f"{sim.get('seed', 0)}:{_param_key(params)}:shape")
    return shapes[pick.randrange(len(shapes))]


def epoch_value(params: Mapping[str, Value], space: Space, epoch: int, sim: Mapping) -> float:
    """The value reported after ``epoch`` (0-based): quality x the curve's shape there, plus
    noise. The recorded shape spans ``sim["epochs"]`` epochs (the stage cap, which is what
    the recorded runs' schedule spanned; default: the recorded length, unstretched)."""
    seed = int(sim.get("seed", 0))
    # run_seed (refit seeds) and split (test vs val) change only the noise, as in training.
    salt = f"{sim.get('run_seed', 0)}:{sim.get('split', 'val')}"
    noise = random.Random(f"{seed}:{_param_key(params)}:{epoch}:{salt}").gauss(
        0.0, float(sim.get("noise", 0.01)))
    if sim.get("curve", "recorded") == "smooth":
        progress = 1.0 - 0.8 * math.exp(-(epoch + 1) / 2.0)
    else:
        shape = curve_shape(params, sim)
        progress = _stretched(shape, epoch, int(sim.get("epochs", len(shape))))
    return quality(params, space, seed) * progress + noise


def epoch_seconds(params: Mapping[str, Value], epoch: int, sim: Mapping) -> float:
    """Seeded heavy-tailed duration of one epoch, with mean ``epoch_s``."""
    seed = int(sim.get("seed", 0))
    draw = random.Random(f"{seed}:{_param_key(params)}:{epoch}:t").paretovariate(_PARETO_ALPHA)
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


def _bad_epochs(values: Sequence[float]) -> int:
    """Epochs since the best one (patience counts these, as training does)."""
    return len(values) - 1 - max(range(len(values)), key=values.__getitem__)


def run_simulated(params: Mapping[str, Value], space: Space, *, epochs: int, sim: Mapping,
                  checkpoint_dir: Path, report: Callable[[float, int], bool],
                  wait: Callable[[float], bool]) -> SimOutcome:
    """Run the simulated trial; resumes after the last epoch in ``checkpoint_dir``.

    Epochs restored from the checkpoint are re-reported (the retried trial is a new Optuna
    trial whose pruner needs the history) but not re-run. ``wait(seconds)`` sleeps and
    returns True when the worker was asked to stop. With ``sim["patience"]`` the trial ends
    ("early_stopped") after that many epochs without a new best.

    Raises:
        Preempted: ``wait`` reported a stop request (the checkpoint holds the last epoch).
    """
    values = _load(checkpoint_dir)
    resumed = len(values) - 1 if values else None
    patience = int(sim.get("patience", 0)) or epochs
    for epoch, value in enumerate(values):
        if report(value, epoch):
            return SimOutcome(max(values[: epoch + 1]), 0, resumed, "pruned")
    ran = 0
    for epoch in range(len(values), epochs):
        if values and _bad_epochs(values) >= patience:
            return SimOutcome(max(values), ran, resumed, "early_stopped")
        if wait(epoch_seconds(params, epoch, sim)):
            raise Preempted(f"stop requested during epoch {epoch}")
        values.append(epoch_value(params, space, epoch, sim))
        ran += 1
        _save(checkpoint_dir, values)
        if report(values[-1], epoch):
            return SimOutcome(max(values), ran, resumed, "pruned")
    return SimOutcome(max(values), ran, resumed, "completed")
