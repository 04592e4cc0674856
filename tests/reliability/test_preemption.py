"""Preemption on the local backend, end to end through `launch hpo --backend local`.

A real worker of a 2-worker campaign (simulated objective, stage s0: no pruner, so the
chosen trial cannot be pruned before it is interrupted) gets SIGTERM or SIGUSR2 while a
trial is 3+ epochs in. It must checkpoint, re-queue the trial and exit 75 ("requeue me");
the local backend restarts it; the trial resumes from its checkpoint (only the epochs after
it are computed) and the budget completes. The Slurm variant is in
tests/cli/test_cli_hpo_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.connect import open_storage
from tests.backends.helpers import wait_until
from tests.reliability.helpers import campaign_under_fault, worker_pids

pytestmark = pytest.mark.postgres
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
NAME = "pre.criteria.s0"


def _trial_to_preempt(storage, run_dir):
    """(worker index, RUNNING trial) for a trial 3+ epochs in with 10+ epochs to go, run by
    a worker the backend started (its pid in backend.json); None when there is none yet."""
    pids = {pid: index for index, pid in worker_pids(run_dir).items()}
    try:
        study = optuna.load_study(study_name=NAME, storage=storage)
    except KeyError:  # the launcher has not created the study yet
        return None
    for t in study.get_trials(states=(TrialState.RUNNING,)):
        done = len(t.intermediate_values)
        if t.user_attrs.get("pid") in pids and done >= 3 and t.params["epochs"] - done >= 10:
            return pids[t.user_attrs["pid"]], t
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_preempted_local_worker_exits_75_is_restarted_and_its_trial_resumes(pg_url, tmp_path,
                                                                            sig):
    run_dir = tmp_path / "runs" / "pre"
    # 4 trials of 30-60 epochs (0.05 s each on average): 1.5-3 s per trial.
    args = ["hpo", "--agent", "criteria", "--stage", "s0", "--objective", "simulated",
            "--trials", "4", "--epochs", "60", "--workers", "2", "--experiment", "pre",
            "--storage", pg_url, "--local-restart-delay-s", "0.2"]

    def preempt(launcher):
        storage = wait_until(lambda: open_storage(pg_url) if worker_pids(run_dir) else None,
                             60, "the workers to start")
        index, victim = wait_until(lambda: _trial_to_preempt(storage, run_dir), 60,
                                   "a worker 3 epochs into a trial", step=0.05)
        os.kill(victim.user_attrs["pid"], sig)
        return index, victim

    code, logs, (index, victim) = campaign_under_fault(args, tmp_path, run_dir, preempt,
                                                       timeout_s=120)
    assert code == 0, logs[-3000:]
    worker_log = (run_dir / "logs" / f"worker-{index}.log").read_text()
    assert f"got {sig.name}: checkpointing and exiting with 75 (requeue me)" in worker_log
    assert f"worker {index} asked to be requeued; restart 1/" in worker_log
    (record,) = [w for w in json.loads((run_dir / "backend.json").read_text())["data"]["workers"]
                 if w["index"] == index]
    assert record["exit_codes"] == [75, 0] and record["state"] == "succeeded"

    study = optuna.load_study(study_name=NAME, storage=open_storage(pg_url))
    trials = study.get_trials()
    assert sum(t.state in FINISHED for t in trials) >= 4
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    original = trials[victim.number]
    assert original.state == TrialState.FAIL
    assert original.user_attrs["fail_reason"].startswith(
        "preempted (Preempted: stop requested during epoch ")
    (retry,) = [t for t in trials if t.user_attrs.get("original_trial") == victim.number
                and t.number != victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == original.params
    resumed = retry.user_attrs["resumed_from_epoch"]
    # Resumed from the last checkpointed epoch: every epoch reported before the signal...
    assert resumed >= len(victim.intermediate_values) - 1 >= 2
    # ... and only the epochs after the checkpoint were computed again.
    assert retry.user_attrs["epochs_run"] == retry.params["epochs"] - (resumed + 1)
