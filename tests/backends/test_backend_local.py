"""Local backend: GPU slots, env and secrets, restarts and Ctrl-C with real processes (cancel:
test_backend_cancel_safety.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psy_agents.backends.base import LaunchRequest, load_handle
from psy_agents.backends.local import LocalBackend, assign_gpu_slots, detect_devices
from psy_agents.backends.options import LocalOptions
from psy_agents.errors import BackendError
from tests.backends.helpers import pid_alive, records, standin_argv, wait_until

SECRET = "postgresql+psycopg2://psy:hunter2-secret@db:5432/optuna"


def test_gpu_slots_one_per_worker_from_a_fake_device_list():
    assert assign_gpu_slots(4, 1, ("0", "1", "2", "3")) == ["0", "1", "2", "3"]
    # More workers than slots share GPUs round-robin; two GPUs per worker cut pairs.
    assert assign_gpu_slots(3, 2, ("4", "5", "6", "7")) == ["4,5", "6,7", "4,5"]
    assert assign_gpu_slots(3, 1, ("2", "9")) == ["2", "9", "2"]
    assert assign_gpu_slots(2, 0, ("0",)) == ["", ""]


def test_gpu_slots_refuse_when_too_few_gpus_are_visible():
    with pytest.raises(BackendError) as err:
        assign_gpu_slots(2, 2, ("0",))
    assert err.value.format_message() == (
        "2 GPU(s) per worker asked for, but 1 visible — pass --gpus-per-worker 0 for CPU "
        "workers or set CUDA_VISIBLE_DEVICES")


def test_detect_devices_reads_cuda_visible_devices():
    assert detect_devices({"CUDA_VISIBLE_DEVICES": "3, 5"}) == ("3", "5")
    assert detect_devices({"CUDA_VISIBLE_DEVICES": ""}) == ()


def _req(tmp_path: Path, mode: str, n: int, gpus: int = 0, per_gpu: int = 1) -> LaunchRequest:
    return LaunchRequest(experiment="e1", n_workers=n,
                         worker_argv=standin_argv(tmp_path / "rec", mode),
                         run_dir=tmp_path / "runs" / "e1", env={"PSY_EXTRA": "plain"},
                         secret_env_names=("PSY_STORAGE",), gpus_per_worker=gpus,
                         workers_per_gpu=per_gpu)


def test_two_workers_per_gpu_start_every_process_on_its_slots_gpu(tmp_path):
    (tmp_path / "rec").mkdir()
    req = _req(tmp_path, "done", 2, gpus=1, per_gpu=2)
    handle = LocalBackend(LocalOptions(devices=("7", "8"))).submit(req)
    got = [records(tmp_path / "rec", i) for i in range(4)]
    assert [(r[0]["cuda"], r[0]["gpu_share"]) for r in got] == \
        [("7", "2"), ("7", "2"), ("8", "2"), ("8", "2")]
    assert [w["state"] for w in handle.data["workers"]] == ["succeeded"] * 4
    assert sorted(p.name for p in (req.run_dir / "logs").iterdir()) == \
        [f"worker-{i}.log" for i in range(4)]
    with pytest.raises(BackendError) as err:  # 3 slots of 2 on 2 GPUs: one would take 4
        LocalBackend(LocalOptions(devices=("7", "8"))).render(_req(tmp_path, "done", 3, 1, 2))
    assert err.value.format_message() == (
        "--workers 3 with --workers-per-gpu 2 asks for 3 GPU slots, but 2 GPU(s) are visible "
        "— use --workers 2 and --workers-per-gpu 3 (the same number of processes)")


def test_workers_get_their_slot_index_env_and_inherited_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("PSY_STORAGE", SECRET)
    (tmp_path / "rec").mkdir()
    req = _req(tmp_path, "done", 3, gpus=1)
    backend = LocalBackend(LocalOptions(devices=("7", "8")))
    handle = backend.submit(req)
    got = [records(tmp_path / "rec", i) for i in range(3)]
    assert [r[0]["cuda"] for r in got] == ["7", "8", "7"]
    assert all(r[0]["has_storage"] and r[0]["storage_len"] == len(SECRET) for r in got)
    assert all(r[0]["extra"] == "plain" for r in got)
    assert [w["state"] for w in handle.data["workers"]] == ["succeeded"] * 3
    assert load_handle(req.run_dir) == handle
    logs = sorted(p.name for p in (req.run_dir / "logs").iterdir())
    assert logs == ["worker-0.log", "worker-1.log", "worker-2.log"]
    for text in [backend.render(req), (req.run_dir / "backend.json").read_text(),
                 *(p.read_text() for p in (req.run_dir / "logs").iterdir())]:
        assert "hunter2" not in text
    assert "CUDA_VISIBLE_DEVICES=8" in backend.render(req).splitlines()[3]


def test_crashed_worker_is_restarted_within_the_bound(tmp_path):
    (tmp_path / "rec").mkdir()
    handle = LocalBackend(LocalOptions(max_restarts=1, restart_delay_s=0)).submit(
        _req(tmp_path, "fail-once", 2))
    assert [len(records(tmp_path / "rec", i)) for i in range(2)] == [2, 2]
    assert [(w["state"], w["exit_codes"]) for w in handle.data["workers"]] == \
        [("succeeded", [3, 0])] * 2


def test_worker_that_keeps_crashing_fails_after_max_restarts(tmp_path):
    (tmp_path / "rec").mkdir()
    handle = LocalBackend(LocalOptions(max_restarts=0)).submit(_req(tmp_path, "fail-once", 1))
    assert handle.data["workers"][0]["state"] == "failed"
    assert handle.data["workers"][0]["exit_codes"] == [3]
    log = (tmp_path / "runs/e1/logs/worker-0.log").read_text()
    assert "worker 0 exited with 3; no restarts left" in log


def test_requeue_me_exit_restarts_the_worker(tmp_path):
    (tmp_path / "rec").mkdir()
    handle = LocalBackend(LocalOptions(restart_delay_s=0)).submit(
        _req(tmp_path, "requeue-once", 1))
    assert handle.data["workers"][0]["exit_codes"] == [75, 0]
    assert "asked to be requeued; restart 1/3" in (
        tmp_path / "runs/e1/logs/worker-0.log").read_text()


LAUNCHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from psy_agents.backends.base import LaunchRequest
    from psy_agents.backends.local import LocalBackend
    from psy_agents.backends.options import LocalOptions
    req = LaunchRequest(experiment="e1", n_workers=2, worker_argv=tuple(sys.argv[2:]),
                        run_dir=Path(sys.argv[1]))
    try:
        LocalBackend(LocalOptions(restart_delay_s=0, stop_grace_s=10)).submit(req)
    except KeyboardInterrupt:
        sys.exit(130)
""")


def _start_launcher(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    rec = tmp_path / "rec"
    rec.mkdir()
    run_dir = tmp_path / "runs" / "e1"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(run_dir),
                             *standin_argv(rec, "sleep")])
    wait_until(lambda: all(records(rec, i) for i in range(2)), 30, "both workers to start")
    return proc, rec


def _all_pids(rec: Path) -> list[int]:
    pids = []
    for i in range(2):
        for r in records(rec, i):
            pids += [r["pid"], r["child_pid"]]
    return pids


def test_killed_worker_restarts_and_ctrl_c_leaves_no_process(tmp_path):
    proc, rec = _start_launcher(tmp_path)
    try:
        first = records(rec, 0)[0]
        os.kill(first["pid"], signal.SIGKILL)
        wait_until(lambda: len(records(rec, 0)) == 2, 30, "worker 0 to be restarted")
        assert records(rec, 0)[1]["pid"] != first["pid"]
        handle = wait_until(
            lambda: (h := load_handle(tmp_path / "runs/e1")).data["workers"][0]["restarts"] == 1
            and h, 10, "the handle to record the restart")
        states = LocalBackend().status(handle)
        assert [s.state for s in states] == ["running", "running"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    alive = [pid for pid in _all_pids(rec) if pid_alive(pid)]
    assert alive == [], f"processes left after Ctrl-C: {alive}"
    final = json.loads((tmp_path / "runs/e1/backend.json").read_text())
    assert [w["state"] for w in final["data"]["workers"]] == ["stopped", "stopped"]


def test_launch_cancel_without_a_recorded_launch_is_one_clear_line(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from psy_agents.cli.main import main; main()",
                           "cancel", "--experiment", "nope", "--runs-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: {tmp_path}/nope/backend.json: no workers were recorded for "
                           "this experiment — check --experiment and --runs-dir\n")


def test_local_workers_share_the_cpu_cores(monkeypatch):
    from psy_agents.backends.local import cpu_threads_env

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert cpu_threads_env(4, {}) == {"OMP_NUM_THREADS": "4"}
    assert cpu_threads_env(32, {}) == {"OMP_NUM_THREADS": "1"}
    assert cpu_threads_env(4, {"OMP_NUM_THREADS": "2"}) == {}  # the user's choice stands
    # In a Slurm task: the task's CPUs, not the node's 16.
    assert cpu_threads_env(1, {"SLURM_CPUS_PER_TASK": "6"}) == {"OMP_NUM_THREADS": "6"}
    assert cpu_threads_env(2, {"SLURM_CPUS_PER_TASK": "6"}) == {"OMP_NUM_THREADS": "3"}


@pytest.mark.parametrize(("procs", "threads"), [(None, "6"), ("2", "3")])
def test_a_slurm_task_gives_its_worker_processes_the_tasks_cpus(monkeypatch, procs, threads):
    from psy_agents.backends.slurm_task import SlurmWorkerTask

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    check = f"import os, sys; sys.exit(os.environ['OMP_NUM_THREADS'] != {threads!r})"
    argv = (sys.executable, "-c", check, *(("--procs", procs) if procs else ()))
    assert SlurmWorkerTask(argv, {}, max_requeues=0)(0) == 0


def test_plan_gives_each_worker_its_thread_share(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    workers = LocalBackend()._plan(_req(tmp_path, "done", 2))
    assert [w.env["OMP_NUM_THREADS"] for w in workers] == ["4", "4"]
