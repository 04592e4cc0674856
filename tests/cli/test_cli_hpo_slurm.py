"""`launch hpo --backend slurm` end to end: real sbatch, real Postgres, `--follow`, requeue,
SIGUSR2 preemption.

Needs the single-node Slurm of `.ci/slurm-up.sh`. The tests skip only when `sbatch` is
missing and CI is unset; under CI a missing Slurm fails them (the `slurm_cluster` fixture).
Each test has its own experiment, runs dir (so its own submitit folder: job ids restart at 1
on a fresh Slurm state) and database, and cancels its jobs when it ends, pass or fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from psy_agents.data.prepare import prepare_data
from psy_agents.hpo import spaces
from psy_agents.training.config import TrainConfig
from tests.backends.helpers import wait_until
from tests.backends.test_backend_slurm import slurm_cluster  # noqa: F401 - fixture
from tests.cli.test_cli_hpo import PASSWORD, REPO, all_text_under, launch, with_password
from tests.training.helpers import CRITERIA_SETTINGS, passing_trivial, trivial_baselines

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# Short heartbeats so a killed worker's trial is retried within seconds; Slurm exports the
# submitting environment, so these reach the array tasks' workers.
FAST_HEARTBEATS = {"PSY_HEARTBEAT_INTERVAL_S": "1", "PSY_GRACE_PERIOD_S": "4"}
# Torch in a task takes one thread per core of the node unless told (the CI's Slurm does
# not confine a task to its CPUs): two tasks of 2 threads each on the 2 cores ran a trial
# in 307 s instead of ~40 s.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# One CPU per task: both tasks of the array run at once on the 2-core CI node, which has no
# GPU (Slurm workers ask for one GPU each by default).
SLURM_FLAGS = ["--backend", "slurm", "--gpus-per-worker", "0", "--slurm-cpus-per-task", "1",
               "--slurm-time-min", "30"]


@pytest.fixture
def campaign(tmp_path, pg_url, slurm_cluster):  # noqa: F811 - the imported fixture
    """(experiment, runs dir, storage URL with a password); cancels the workers afterwards."""
    experiment = f"sl-{uuid.uuid4().hex[:8]}"
    runs = tmp_path / "runs"
    yield experiment, runs, with_password(pg_url)
    if (runs / experiment / "backend.json").exists():
        out = launch(["cancel", "--experiment", experiment, "--runs-dir", str(runs)],
                     cwd=tmp_path)
        assert out.returncode == 0, out.stderr


def _study(url: str, name: str):
    return optuna.load_study(study_name=name, storage=url)


def _assert_over(study, budget: int) -> None:
    states = [t.state for t in study.trials]
    assert sum(s in FINISHED for s in states) >= budget
    assert not [t.number for t in study.trials if not t.state.is_finished()]


def _status_until_workers(experiment: str, runs: Path, url: str, cwd: Path, wanted: str) -> str:
    """`launch status` output once its workers line ends with ``wanted`` (sacct lags a bit)."""
    def ask():
        out = launch(["status", "--experiment", experiment, "--runs-dir", str(runs)], cwd=cwd,
                     env={"PSY_STORAGE": url})
        assert out.returncode == 0, out.stderr
        return out.stdout if out.stdout.rstrip().endswith(wanted) else None
    return wait_until(ask, 120, f"`launch status` to say {wanted!r}", step=2.0)


@pytest.mark.slurm
@pytest.mark.slow
def test_real_training_campaign_through_sbatch_follows_to_the_end(tmp_path, campaign):
    experiment, runs, url = campaign
    # Floors that every trivial predictor misses (all symptoms absent: macro-F1 0, all
    # present: 0.27, both AUROC 0.5); measured through sbatch: 0.877 / 0.896, AUROC 0.984.
    floors = {"symptom_macro_f1": 0.8, "macro_auroc": 0.95}
    val = prepare_data(REPO / "data" / "sample").split("val")
    assert passing_trivial(floors, trivial_baselines(val)) == []
    # The tiny model and the real training loop on the whole training split, 2 epochs, with
    # the settings that learn in tests/training/test_train_sample.py held (nothing is
    # searched; no pruner): trial n trains seed n, measured in-process at val macro-F1
    # 0.899 (seed 0) and 0.896 (seed 1).
    stages = tmp_path / "stages.toml"
    stages.write_text('[stages.s1]\ntrials = 60\nepochs = 8\npatience = 3\npruner = "none"\n')
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--workers", "2",
                  "--trials", "2", "--epochs", "2", "--stages-file", str(stages),
                  *_held_criteria_settings(), "--experiment", experiment, "--runs-dir",
                  str(runs), *SLURM_FLAGS, "--follow"],
                 cwd=tmp_path, env={"PSY_STORAGE": url, **FAST_HEARTBEATS, **ONE_THREAD},
                 timeout=540)
    assert out.returncode == 0, out.stderr
    assert "starting 2 slurm worker(s)" in out.stderr and "submitted slurm job" in out.stderr
    name = f"{experiment}.criteria.s1"
    study = _study(url, name)
    _assert_over(study, 2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for t in study.trials:  # each trial learned
        assert t.user_attrs["epochs_run"] == 2 and t.params == {}
        metrics = t.user_attrs["metrics"]
        assert {k: metrics[k] for k, f in floors.items() if metrics[k] < f} == {}, metrics
    # The budget is study-wide: both array tasks took trials from the one study.
    assert {t.user_attrs["worker_index"] for t in study.trials} == {0, 1}
    assert f"{name}  [####################] 2/2" in out.stdout
    shown = _status_until_workers(experiment, runs, url, tmp_path, "succeeded 0-1")
    assert f"{name}  [" in shown and "workers: slurm job " in shown
    assert PASSWORD not in out.stdout + out.stderr + shown
    assert PASSWORD not in all_text_under(runs)


def _held_criteria_settings() -> list[str]:
    """``--fix`` flags holding every knob of the criteria space (and the epoch plan's
    negative fraction) at the values of tests/training/helpers.CRITERIA_SETTINGS, the
    others at TrainConfig's defaults, as the in-process test trains them."""
    cfg = TrainConfig(agent="criteria", **CRITERIA_SETTINGS)
    names = {p.name for p in spaces.agent_space("criteria", ("tiny",), 2)} | set(CRITERIA_SETTINGS)
    return [arg for n in sorted(names) for arg in ("--fix", f"{n}={json.dumps(getattr(cfg, n))}")]


def _trial_to_interrupt(url: str, name: str):
    """A RUNNING trial of worker 0 with at least 3 epochs reported (and checkpointed)."""
    for t in _study(url, name).get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("worker_index") == 0 and len(t.intermediate_values) >= 3:
            return t
    return None


@pytest.fixture
def follow(tmp_path, campaign):
    """follow(stage, trials, epochs) starts `launch hpo ... --follow` (simulated objective,
    2 Slurm workers) as a process and returns (process, log path, study name); the
    process is killed after the test if it is still running."""
    experiment, runs, url = campaign
    procs = []

    def start(stage: str, trials: int, epochs: int):
        cmd = [sys.executable, "-m", "psy_agents.cli.main", "hpo", "--agent", "criteria",
               "--workers", "2", "--objective", "simulated", "--experiment", experiment,
               "--runs-dir", str(runs), "--stage", stage, "--trials", str(trials),
               "--epochs", str(epochs), *SLURM_FLAGS, "--follow"]
        env = {**os.environ, "PSY_STORAGE": url, **FAST_HEARTBEATS,
               "PSY_DATA_DIR": str(REPO / "data" / "sample")}
        log = tmp_path / "launch.log"
        with open(log, "w") as fh:
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=fh,
                                          stderr=subprocess.STDOUT))
        return procs[-1], log, f"{experiment}.criteria.{stage}"

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _requeue_task_0(job: str, victim) -> str:
    subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True)
    return "succeeded 0-1"  # the task came back and ended well


def _usr2_to_task_0(job: str, victim) -> str:
    # What Slurm sends before a preemption or the time limit (--signal=USR2@N): SIGUSR2 to
    # every process of the task's step, so submitit's handler and the worker both get it.
    subprocess.run(["scancel", "--signal=USR2", f"{job}_0"], check=True)
    return "succeeded 0-1"  # submitit checkpointed and requeued the task; it came back


def _kill_worker_0(job: str, victim) -> str:
    # No signal handler runs: only the heartbeat going stale tells the other worker.
    os.kill(victim.user_attrs["pid"], 9)
    return "succeeded 1; failed 0"  # a crashed worker is a failed task, not requeued


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("interrupt", [_requeue_task_0, _usr2_to_task_0, _kill_worker_0],
                         ids=["scontrol-requeue", "scancel-usr2", "kill-9-worker"])
def test_interrupted_trial_resumes_from_its_checkpoint(tmp_path, campaign, follow, interrupt):
    experiment, runs, url = campaign
    # s0 has no pruner, so the trial chosen below cannot be pruned before it is interrupted;
    # 150 epochs of the simulated workload (0.05 s each) keep each trial running 4-8 s.
    proc, log, name = follow("s0", 4, 150)
    wait_until(lambda: (runs / experiment / "backend.json").exists(), 120, "the submission")
    victim = wait_until(lambda: _trial_to_interrupt(url, name), 120,
                        "worker 0 to be 3 epochs into a trial", step=0.1)
    job = _job_id(runs / experiment)
    workers_end = interrupt(job, victim)
    # With the default 180 s grace period a killed worker's trial would wait minutes: the
    # short PSY_GRACE_PERIOD_S reached the Slurm tasks through the exported environment.
    assert proc.wait(timeout=180) == 0, log.read_text()
    study = _study(url, name)
    _assert_over(study, 4)
    original = study.trials[victim.number]
    assert original.state == optuna.trial.TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.params == original.params and retry.user_attrs["original_trial"] == victim.number
    resumed = retry.user_attrs["resumed_from_epoch"]
    assert resumed >= 2
    # Only the epochs after the checkpoint were computed again: no full recomputation.
    assert retry.user_attrs["epochs_run"] == retry.params["epochs"] - (resumed + 1)
    _status_until_workers(experiment, runs, url, tmp_path, workers_end)
    if interrupt is _kill_worker_0:
        return
    # Requeue (SIGTERM from Slurm) and SIGUSR2 (submitit's checkpoint): the worker saved the
    # trial and said why; the task went back to the queue once and then finished.
    assert original.user_attrs["fail_reason"].startswith("preempted (Preempted: stop requested")
    runs_of_0 = subprocess.run(["sacct", "-j", f"{job}_0", "-X", "-D", "-n", "-P", "-o",
                                "State"], capture_output=True, text=True, check=True)
    states = runs_of_0.stdout.split()
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED", states
    if interrupt is _usr2_to_task_0:
        logs = all_text_under(runs / experiment / "slurm")
        assert "Caught signal SIGUSR2" in logs  # submitit's handler: checkpoint + requeue
        assert "got SIGUSR2: checkpointing and exiting with 75 (requeue me)" in logs


@pytest.mark.slurm
def test_follow_ends_with_one_line_when_every_worker_is_cancelled(tmp_path, campaign, follow):
    experiment, runs, url = campaign
    # Slow trials (1500 epochs): the budget cannot finish before the cancel lands.
    proc, log, name = follow("s1", 50, 1500)
    wait_until(lambda: len(_study_or_none(url, name)) >= 2, 120, "both workers to start trials")
    out = launch(["cancel", "--experiment", experiment, "--runs-dir", str(runs)], cwd=tmp_path)
    job = _job_id(runs / experiment)
    assert (out.returncode, out.stdout) == (
        0, f"cancelled the slurm workers of {experiment} (job {job})\n")
    assert proc.wait(timeout=120) == 2, log.read_text()
    last = log.read_text().splitlines()[-1]
    assert last == (f"error: every slurm worker of {experiment} has ended (0: stopped, "
                    f"1: stopped) but the campaign is not finished — read the worker logs "
                    f"under {runs / experiment / 'slurm' / job} and relaunch the same "
                    "`launch hpo` command to resume")
    # Both preempted trials were checkpointed and wait for a relaunch; none is left RUNNING.
    wait_until(lambda: not _study(url, name).get_trials(
        states=(optuna.trial.TrialState.RUNNING,)), 60, "no trial RUNNING")


def _study_or_none(url: str, name: str) -> list:
    """The RUNNING trials of ``name`` ([] while the study does not exist yet)."""
    try:
        study = _study(url, name)
    except KeyError:
        return []
    return study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def _job_id(run_dir: Path) -> str:
    return json.loads((run_dir / "backend.json").read_text())["job_id"]
