"""Slurm backend: the sbatch script's settings, errors, and real arrays through sbatch/submitit.
The whole script is pinned by the goldens of `launch hpo --backend slurm --dry-run`
(tests/cli/test_cli_gpus.py).

The `slurm` tests need the single-node cluster of `.ci/slurm-up.sh`. They skip only when
`sbatch` is absent and CI is not set; under CI a missing Slurm fails them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from psy_agents.backends.base import Cancelled, LaunchRequest
from psy_agents.backends.options import SlurmOptions
from psy_agents.backends.slurm import SlurmBackend, parse_sacct
from psy_agents.errors import BackendError
from tests.backends.helpers import records, standin_argv, wait_until

SECRET = "postgresql+psycopg2://psy:hunter2-secret@db:5432/optuna"


def _site_request() -> tuple[SlurmBackend, LaunchRequest]:
    opts = SlurmOptions(partition="gpu", account="lab", qos="normal", time_min=600, mem_gb=32,
                        cpus_per_task=8, constraint="a100", setup=("module load cuda/12.4",),
                        apptainer_image="/images/psy-agents.sif", array_parallelism=4,
                        folder="/shared/runs/slurm", data_dir="/shared/data/redsm5",
                        runs_dir="/shared/runs")
    data_dir, runs_dir = SlurmBackend(opts).worker_paths(Path("data"), Path("runs"))
    req = LaunchRequest(experiment="paper", n_workers=8,
                        worker_argv=("launch", "worker", "--study", "paper.joint.s1",
                                     "--data-dir", data_dir, "--runs-dir", runs_dir),
                        run_dir=Path("runs/paper"), env={"HF_HUB_OFFLINE": "1"},
                        secret_env_names=("PSY_STORAGE",), gpus_per_worker=1)
    return SlurmBackend(opts), req


def test_sbatch_script_carries_the_cluster_settings_and_no_secret(monkeypatch):
    monkeypatch.setenv("PSY_STORAGE", SECRET)
    backend, req = _site_request()
    script = backend.render(req)
    for line in ["#SBATCH --array=0-7%4", "#SBATCH --gpus-per-node=1", "#SBATCH --mem=32GB",
                 "#SBATCH --partition=gpu", "#SBATCH --requeue", "module load cuda/12.4"]:
        assert line in script.splitlines()
    assert "apptainer exec --nv /images/psy-agents.sif python3 -u -m submitit" in script
    assert "hunter2" not in script
    gres = SlurmBackend(SlurmOptions(gres="gpu:a100:1")).render(req)
    assert "#SBATCH --gres=gpu:a100:1" in gres and "gpus-per-node" not in gres


def test_two_workers_per_gpu_run_in_each_array_task(monkeypatch):
    monkeypatch.setenv("PSY_STORAGE", SECRET)
    backend, req = _site_request()
    two = dataclasses.replace(req, workers_per_gpu=2)
    script = backend.render(two).splitlines()
    assert ("# worker of each array task (inside /images/psy-agents.sif): launch worker "
            "--study paper.joint.s1 --data-dir /shared/data/redsm5 --runs-dir /shared/runs "
            "--procs 2 --index <array task index>") in script
    assert ("# each array task I runs 2 worker processes, indices 2*I to 2*I+1 "
            "(`--procs 2`), each with 1/2 of the GPU's memory") in script
    assert "#SBATCH --array=0-7%4" in script and "#SBATCH --gpus-per-node=1" in script
    # what the task really runs (the pickled callable) is the same slot command
    assert backend._task(two).worker_argv == (*req.worker_argv, "--procs", "2")
    assert backend._task(req).worker_argv == req.worker_argv


def test_parse_sacct_expands_pending_ranges():
    text = "12_0|COMPLETED|0:0\n12_1|RUNNING|0:0\n12_[2-4%2]|PENDING|0:0\n12_5|FAILED|1:0\n"
    assert parse_sacct(text, "12") == {
        0: ("succeeded", "COMPLETED"), 1: ("running", "RUNNING"), 2: ("pending", "PENDING"),
        3: ("pending", "PENDING"), 4: ("pending", "PENDING"), 5: ("failed", "FAILED")}
    assert parse_sacct("7|CANCELLED by 0|0:0\n", "7") == {0: ("stopped", "CANCELLED")}


def test_missing_sbatch_is_a_clear_error_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    _, req = _site_request()
    with pytest.raises(BackendError) as err:
        SlurmBackend().check_available()
    assert err.value.format_message() == (
        "`sbatch` not found on PATH, so Slurm cannot be used here — run on a Slurm login "
        "node or use --backend local")
    from psy_agents.backends.registry import start

    req = LaunchRequest("e", 1, ("x",), run_dir=tmp_path / "runs/e")
    with pytest.raises(BackendError):
        start(SlurmBackend(), req)
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def slurm_cluster():
    if shutil.which("sbatch") is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but `sbatch` is missing: run .ci/slurm-up.sh first")
        pytest.skip("`sbatch` not found: run .ci/slurm-up.sh (with CI set this fails)")
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    assert "idle" in states.stdout or "mix" in states.stdout or "alloc" in states.stdout, \
        f"Slurm is installed but its node is not usable: {states.stdout!r} {states.stderr!r}"


@pytest.fixture
def submit(tmp_path, monkeypatch, slurm_cluster):
    """submit(mode, n, max_requeues=2) -> (backend, request, handle, record dir); the
    test's jobs are cancelled afterwards, so a failed test cannot block the next one."""
    from psy_agents.backends.registry import start

    handles = []

    def _submit(mode: str, n: int, max_requeues: int = 2):
        monkeypatch.setenv("PSY_STORAGE", SECRET)
        rec = tmp_path / "rec"
        rec.mkdir()
        # Every test has its own folder: job ids restart at 1 on a fresh cluster state.
        backend = SlurmBackend(SlurmOptions(time_min=10, cpus_per_task=1,
                                            max_requeues=max_requeues))
        req = LaunchRequest("sl", n, standin_argv(rec, mode), run_dir=tmp_path / "runs/sl",
                            env={"PSY_EXTRA": "plain"}, secret_env_names=("PSY_STORAGE",))
        handles.append(start(backend, req))
        return backend, req, handles[-1], rec

    yield _submit
    for handle in handles:
        SlurmBackend().cancel(handle)


def _task_logs(handle) -> str:
    """submitit's stdout and stderr logs of a job (all tasks, all attempts)."""
    folder = Path(str(handle.data["folder"]).replace("%j", handle.job_id))
    return "".join(p.read_text() for p in sorted(folder.glob("*_log.*")))


def _wait_done(backend, handle, timeout=120):
    def done():
        states = backend.status(handle)
        return states if all(s.state in ("succeeded", "failed", "stopped") for s in states) \
            else None
    return wait_until(done, timeout, f"Slurm array {handle.job_id} to finish", step=1.0)


@pytest.mark.slurm
def test_array_of_two_tasks_completes(tmp_path, submit):
    backend, req, handle, rec = submit("done", 2)
    states = _wait_done(backend, handle)
    assert [(s.index, s.state) for s in states] == [(0, "succeeded"), (1, "succeeded")]
    for i in range(2):
        (r,) = records(rec, i)
        assert (r["slurm_task"], r["extra"], r["storage_len"]) == (str(i), "plain", len(SECRET))
    folder = Path(str(handle.data["folder"]).replace("%j", handle.job_id))
    assert (folder / f"{handle.job_id}_submission.sh").read_text() == backend.render(req)
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert b"hunter2" not in path.read_bytes(), path


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize(("command", "log_line"), [
    # Slurm's own requeue (what PreemptMode=REQUEUE does): the task is killed and rerun.
    (["scontrol", "requeue"], "Starting with JobEnvironment"),
    # SIGUSR2, sent before the time limit: submitit calls checkpoint() and requeues.
    (["scancel", "--signal=USR2"], "Calling checkpoint method"),
], ids=["scontrol-requeue", "sigusr2-checkpoint"])
def test_interrupted_task_comes_back_and_completes(submit, command, log_line):
    backend, _, handle, rec = submit("hang-once", 1)
    wait_until(lambda: records(rec, 0), 60, "the task to start")
    # One worker is submitted as a plain job (no array), so its id has no _0 suffix.
    subprocess.run([*command, handle.job_id], check=True)
    states = _wait_done(backend, handle)
    assert [s.state for s in states] == ["succeeded"]
    assert [r["attempt"] for r in records(rec, 0)] == [1, 2]
    assert log_line in _task_logs(handle)


@pytest.mark.slurm
@pytest.mark.slow
def test_requeue_me_exit_75_requeues_each_task(submit):
    backend, _, handle, rec = submit("requeue-once", 2)
    states = _wait_done(backend, handle)
    assert [s.state for s in states] == ["succeeded", "succeeded"]
    assert [[r["attempt"] for r in records(rec, i)] for i in range(2)] == [[1, 2], [1, 2]]
    backend.cancel(handle)  # cancelling a finished array is a no-op, not an error


@pytest.mark.slurm
def test_requeue_requests_beyond_max_requeues_fail_the_task(submit):
    backend, _, handle, rec = submit("requeue-once", 1, max_requeues=0)
    assert [s.state for s in _wait_done(backend, handle)] == ["failed"]
    assert len(records(rec, 0)) == 1
    assert "asked to be requeued after 0 requeues (max_requeues=0)" in _task_logs(handle)


@pytest.mark.slurm
def test_cancel_stops_a_running_array(submit):
    backend, _, handle, rec = submit("sleep", 2)
    wait_until(lambda: all(records(rec, i) for i in range(2)), 60, "both tasks to start")
    # sacct (slurmdbd) learns of a start a moment after the task itself has started.
    wait_until(lambda: [s.state for s in backend.status(handle)] == ["running", "running"],
               30, "sacct to report both tasks running", step=0.5)
    assert backend.cancel(handle) == Cancelled()
    # The workers exit 75 on SIGTERM; a cancel must still stick (no self-requeue).
    assert [s.state for s in _wait_done(backend, handle)] == ["stopped", "stopped"]
    assert [len(records(rec, i)) for i in range(2)] == [1, 1]
    assert backend.cancel(handle) == Cancelled(ended=True)  # idempotent, and says so
