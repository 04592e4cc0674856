"""The two launchers we compare against, on the same trial durations.

- *batch barrier* (how Hydra's sweeper works): start N trials, wait for the slowest, repeat.
  :func:`barrier_wall` computes its wall time from the durations; :func:`measure_barrier`
  runs it for real with N threads sleeping the durations (no storage cost at all, which
  favours the baseline).
- *process per trial* (how Katib works): every trial pays a cold worker start.
  :func:`list_schedule` computes its wall time: trials in order, each on the slot that frees
  first, each costing (cold start + work). The cold start itself is measured by the caller.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Sequence


def _check_workers(n_workers: int) -> None:
    if n_workers < 1:
        raise ValueError(f"The value of `n_workers` is {n_workers}, but must be >= 1")


def rounds(durations: Sequence[float], n_workers: int) -> list[list[float]]:
    """``durations`` in order, cut into rounds of ``n_workers`` (the last may be short)."""
    _check_workers(n_workers)
    return [list(durations[i:i + n_workers]) for i in range(0, len(durations), n_workers)]


def barrier_wall(durations: Sequence[float], n_workers: int, per_round_s: float = 0.0) -> float:
    """Wall seconds of the batch-barrier launcher: sum over rounds of (slowest + per_round_s).

    ``per_round_s`` is the coordination cost of one round (ask N, tell N), taken as our own
    measured per-trial overhead so that both launchers pay the same storage cost.
    """
    return sum(max(r) + per_round_s for r in rounds(durations, n_workers))


def list_schedule(durations: Sequence[float], n_workers: int, per_trial_s: float = 0.0) -> float:
    """Wall seconds when each trial (in order) runs on the first free of ``n_workers`` slots
    and costs ``per_trial_s`` on top of its duration (a cold start, say)."""
    _check_workers(n_workers)
    slots = [0.0] * n_workers
    for d in durations:
        free = heapq.heappop(slots)
        heapq.heappush(slots, free + per_trial_s + d)
    return max(slots) if durations else 0.0


def measure_barrier(durations: Sequence[float], n_workers: int) -> float:
    """Run the barrier launcher for real: per round, one thread per trial sleeps its
    duration and the round ends when all have joined. Returns measured wall seconds."""
    t0 = time.perf_counter()
    for batch in rounds(durations, n_workers):
        threads = [threading.Thread(target=time.sleep, args=(d,)) for d in batch]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    return time.perf_counter() - t0


def compare(durations: Sequence[float], n_workers: int, *, ours_span_s: float,
            overhead_s: float, cold_start_s: float,
            measured_barrier_s: float | None = None) -> dict[str, float | str | None]:
    """Both baselines on ``durations`` (the same trials, in start order) and our throughput
    as a ratio to each (> 1: we are faster). The barrier ratio uses the measured barrier
    when given, else the computed one."""
    barrier = barrier_wall(durations, n_workers, per_round_s=overhead_s)
    per_trial = list_schedule(durations, n_workers, per_trial_s=cold_start_s)
    barrier_used = measured_barrier_s if measured_barrier_s is not None else barrier
    return {
        "barrier_computed_s": barrier, "barrier_measured_s": measured_barrier_s,
        "barrier_efficiency": sum(durations) / (n_workers * barrier_used),
        "barrier_basis": "measured (threads sleeping the same durations)"
        if measured_barrier_s is not None else "computed from the same durations",
        "process_per_trial_s": per_trial, "cold_start_s": cold_start_s,
        "process_per_trial_basis": "computed: same durations + measured cold start per trial",
        "ratio_vs_barrier": barrier_used / ours_span_s,
        "ratio_vs_process_per_trial": per_trial / ours_span_s,
    }
