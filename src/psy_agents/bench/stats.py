"""Pure benchmark arithmetic: percentiles, per-trial overhead, scheduling efficiency.

Everything here takes plain numbers (seconds) and is tested alone on tiny inputs; the
benchmark commands only collect the numbers. Definitions (also printed by the commands):

- a trial's *work* is the time its objective spent on epochs (the simulated sleeps);
- a trial's *overhead* is the time its worker spent on it outside that work: from the end of
  the worker's previous trial (or this trial's start, for the first one) to this trial's end,
  minus the work — sampling, storage round-trips, reports, callbacks;
- *scheduling efficiency* = total work / sum over workers of (pool end − the worker's first
  trial start): the share of worker time spent on objective work once a worker is up. Cold
  start is excluded (on a cluster every worker starts on its own machine, in parallel) and
  reported separately.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TrialTiming:
    """One finished trial as seen by its worker. Times are seconds on one clock."""

    worker: int
    start: float
    end: float
    work_s: float


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside [0, 100].
    """
    if not values:
        raise ValueError("The value of `values` is empty, but must hold at least one number")
    if not 0 <= q <= 100:
        raise ValueError(f"The value of `q` is {q}, but must be in [0, 100]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def by_worker(trials: Sequence[TrialTiming]) -> dict[int, list[TrialTiming]]:
    """Each worker's trials in start order."""
    out: dict[int, list[TrialTiming]] = {}
    for t in sorted(trials, key=lambda t: (t.worker, t.start)):
        out.setdefault(t.worker, []).append(t)
    return out


def overheads(trials: Sequence[TrialTiming]) -> list[float]:
    """Per-trial coordination overhead (seconds), see the module docstring."""
    out: list[float] = []
    for timeline in by_worker(trials).values():
        prev_end = None
        for t in timeline:
            since = t.start if prev_end is None else prev_end
            out.append(max(0.0, t.end - since - t.work_s))
            prev_end = t.end
    return out


def efficiency(trials: Sequence[TrialTiming]) -> float:
    """Scheduling efficiency: total work / sum over workers of (pool end − first start)."""
    if not trials:
        raise ValueError("The value of `trials` is empty, but must hold at least one trial")
    end = max(t.end for t in trials)
    available = sum(end - timeline[0].start for timeline in by_worker(trials).values())
    work = sum(t.work_s for t in trials)
    return work / available if available > 0 else 1.0


def pool_span(trials: Sequence[TrialTiming]) -> float:
    """Seconds from the first trial's start to the last trial's end."""
    return max(t.end for t in trials) - min(t.start for t in trials)


def pool_figures(trials: Sequence[TrialTiming]) -> dict[str, float]:
    """The headline figures of one pool: efficiency, overhead p50/p95 (ms), trials/s."""
    over = overheads(trials)
    span = pool_span(trials)
    return {"trials": len(trials), "efficiency": efficiency(trials),
            "overhead_p50_ms": 1000 * percentile(over, 50),
            "overhead_p95_ms": 1000 * percentile(over, 95),
            "work_s": sum(t.work_s for t in trials), "span_s": span,
            "trials_per_s": len(trials) / span if span > 0 else float("inf")}
