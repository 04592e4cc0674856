"""Several workers per GPU, for real: `launch hpo --workers-per-gpu 2` on the local backend
and `launch worker --procs 2` (what each Slurm task and pod runs), with real processes, the
simulated objective and real PostgreSQL. CPU workers: the mechanics are the same."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import optuna
import pytest

from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from tests.backends.helpers import wait_until
from tests.cli.test_cli_hpo import REPO, launch

pytestmark = pytest.mark.postgres
RUNNING = (optuna.trial.TrialState.RUNNING,)


def test_two_local_processes_per_gpu_slot_both_report_trials(tmp_path, pg_url):
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
                  "--trials", "8", "--epochs", "12", "--workers", "1", "--workers-per-gpu", "2",
                  "--gpus-per-worker", "0", "--experiment", "w2"], cwd=tmp_path,
                 env={"PSY_STORAGE": pg_url})
    assert out.returncode == 0, out.stderr
    assert "starting 1 local worker(s), 2 processes each" in out.stderr
    trials = optuna.load_study(study_name="w2.criteria.s1", storage=pg_url).trials
    assert {t.user_attrs["worker_index"] for t in trials} == {0, 1}
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    logs = sorted(p.name for p in (tmp_path / "runs" / "w2" / "logs").iterdir())
    assert logs == ["worker-0.log", "worker-1.log"]


def _worker(pg_url: str, study: str, index: int, tmp_path) -> subprocess.Popen:
    """`launch worker --procs 2 --index I`, as a Slurm task or a pod starts it."""
    return subprocess.Popen(
        [sys.executable, "-m", "psy_agents.cli.main", "worker", "--study", study,
         "--procs", "2", "--index", str(index), "--runs-dir", str(tmp_path / "runs"),
         "--data-dir", str(REPO / "data" / "sample")],
        cwd=tmp_path, env={**os.environ, "PSY_STORAGE": pg_url}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def test_one_sigterm_to_a_slot_of_two_requeues_both_trials(tmp_path, pg_url):
    """The pod's SIGTERM reaches the slot process only: both children must checkpoint and
    re-queue their trials, and the slot exits 75 (requeue me)."""
    create_campaign(pg_url, experiment="sl", agents=("criteria",), stages=("s1",),
                    n_workers=2, overrides=CampaignOverrides(
                        objective="simulated", trials=4, epochs=4,
                        sim={"epoch_s": 0.5, "seed": 3}))
    name = "sl.criteria.s1"
    study = optuna.load_study(study_name=name, storage=pg_url)
    slot = _worker(pg_url, name, 1, tmp_path)
    try:
        running = wait_until(lambda: (r := study.get_trials(states=RUNNING)) and len(r) == 2
                             and all(t.intermediate_values for t in r) and r, 60,
                             "both children to run a trial with an epoch done")
        # slot 1 of K=2 runs workers 2 and 3, as two processes that are not the slot itself
        assert {t.user_attrs["worker_index"] for t in running} == {2, 3}
        assert slot.pid not in {t.user_attrs["pid"] for t in running}
        slot.send_signal(signal.SIGTERM)
        assert slot.wait(timeout=60) == 75, slot.stdout.read()
    finally:
        if slot.poll() is None:
            slot.kill()
    study = optuna.load_study(study_name=name, storage=pg_url)
    assert all(study.user_attrs.get(f"preempted_{t.number}") for t in running)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(t.user_attrs.get("original_trial", t.number) for t in waiting) == \
        sorted(t.number for t in running)  # each re-queued to resume from its checkpoint
    assert not study.get_trials(states=RUNNING)
