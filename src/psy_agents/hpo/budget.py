"""A study's budget, claimed before a trial starts so that N workers never overshoot it.

A study's budget counts its finished trials (COMPLETE + PRUNED; for a refit, COMPLETE). A
worker may start a trial only while

    finished + running < budget, or a retry is WAITING

(a retry replaces a trial that failed, which no longer counts). The count and the start of
the trial happen under one lock per study (:func:`psy_agents.hpo.recovery.study_lock`):
the worker takes it, counts, and keeps it until ``study.ask()`` has created the trial as
RUNNING, so the next worker to count sees it. Hence:

- PostgreSQL and SQLite: no overshoot while the database stays up. A Postgres restart
  drops the advisory lock with its connection; workers that were inside it then may start
  one trial each past the budget (at most the number of workers waiting at that moment).
- Other databases (MySQL): no lock; workers that count at the same moment may each start
  one trial, so the overshoot is at most (number of workers - 1), once per study.

The budget is read from the study's spec at every claim, so a budget raised by a later
``launch hpo --trials`` reaches workers that are already running.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psy_agents.hpo.optuna_private import study_id, study_storage
from psy_agents.hpo.recovery import study_lock
from psy_agents.hpo.spec import SPEC_ATTR, StudySpec

# What a study's budget looks like to a worker that asks for a trial.
FINISHED = "finished"  # the budget is finished and no retry waits
FULL = "full"  # the rest of the budget is running on other workers


@dataclass(frozen=True)
class Counts:
    """Trials of one study by what they mean for its budget."""

    finished: int
    running: int
    waiting: int

    def verdict(self, budget: int) -> str | None:
        """None when a trial may start; else :data:`FINISHED` or :data:`FULL`."""
        if self.waiting:
            return None  # a retry of a failed trial always runs
        if self.finished >= budget:
            return FINISHED
        return FULL if self.finished + self.running >= budget else None


def count(study, states: Sequence[Any]) -> Counts:
    """One read of ``study``'s trials; ``states`` are the ones that count as finished."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return Counts(finished=sum(t.state in states for t in trials),
                  running=sum(t.state == TrialState.RUNNING for t in trials),
                  waiting=sum(t.state == TrialState.WAITING for t in trials))


def current_budget(study) -> int:
    """The budget in the study's stored spec now (a later launch may have raised it)."""
    return StudySpec.from_json(study.user_attrs[SPEC_ATTR]).budget


class BudgetGate:
    """Claims a study's budget for one trial at a time.

    Usage::

        gate = BudgetGate(study, states)
        verdict = gate.claim()          # holds the study's budget lock when None
        if verdict is None:
            try:
                study.optimize(gate.wrap(objective), n_trials=1, ...)
            finally:
                gate.release()
    """

    def __init__(self, study, states: Sequence[Any]) -> None:
        self.study, self.states = study, tuple(states)
        self._held: contextlib.AbstractContextManager | None = None

    def claim(self) -> str | None:
        """Count under the lock. None: a trial may start, and the lock stays held until the
        wrapped objective is entered (the trial then exists as RUNNING) or :meth:`release`.
        Otherwise the lock is released and :data:`FINISHED` or :data:`FULL` returned."""
        lock = study_lock(study_storage(self.study), study_id(self.study), "budget")
        lock.__enter__()
        try:
            verdict = count(self.study, self.states).verdict(current_budget(self.study))
        except BaseException:
            lock.__exit__(*sys.exc_info())
            raise
        if verdict is None:
            self._held = lock
        else:
            lock.__exit__(None, None, None)
        return verdict

    def release(self) -> None:
        """Release the lock if it is still held. Idempotent."""
        held, self._held = self._held, None
        if held is not None:
            held.__exit__(None, None, None)

    def wrap(self, objective: Callable[[Any], float]) -> Callable[[Any], float]:
        """``objective``, releasing the lock as it starts: by then Optuna has created the
        trial (RUNNING, committed), so the next worker's count includes it."""
        def run(trial):
            self.release()
            return objective(trial)
        return run
