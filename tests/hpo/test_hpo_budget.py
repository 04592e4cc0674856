"""Budgets that hold: the claim rule alone, and the lock that makes it atomic (real Postgres)."""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.budget import FINISHED, FULL, BudgetGate, Counts
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.history import finished_states
from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig


@pytest.mark.parametrize(("counts", "budget", "verdict"), [
    (Counts(finished=0, running=0, waiting=0), 4, None),
    (Counts(finished=2, running=1, waiting=0), 4, None),
    (Counts(finished=2, running=2, waiting=0), 4, FULL),  # the rest runs elsewhere
    (Counts(finished=3, running=5, waiting=0), 4, FULL),
    (Counts(finished=4, running=0, waiting=0), 4, FINISHED),
    (Counts(finished=4, running=0, waiting=1), 4, None),  # a retry always runs
    (Counts(finished=2, running=2, waiting=1), 4, None),
    (Counts(finished=9, running=0, waiting=0), 10, None),  # a raised budget reopens
])
def test_a_trial_may_start_only_below_finished_plus_running(counts, budget, verdict):
    assert counts.verdict(budget) == verdict


@pytest.mark.postgres
def test_eight_threads_claiming_at_once_start_exactly_the_budget(pg_url):
    """Each thread claims, then creates its trial the way study.optimize does (ask) before
    releasing; without the lock all eight counts see an empty study and eight trials start."""
    stage = StageConfig(name="s0", trials=3, epochs=1, patience=1)
    create_campaign(pg_url, experiment="gate", agents=["criteria"], stages=(stage,),
                    n_workers=8, overrides=CampaignOverrides(objective="simulated"))
    barrier, started, verdicts = threading.Barrier(8), [], []

    def worker() -> None:
        study = optuna.load_study(study_name="gate.criteria.s0", storage=open_storage(pg_url))
        gate = BudgetGate(study, finished_states())
        barrier.wait()
        verdict = gate.claim()
        verdicts.append(verdict)
        if verdict is None:
            gate.wrap(started.append)(study.ask())
        gate.release()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    study = optuna.load_study(study_name="gate.criteria.s0", storage=pg_url)
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 3 == len(started)
    assert sorted(map(str, verdicts)) == ["None"] * 3 + [FULL] * 5
