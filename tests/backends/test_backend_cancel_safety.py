"""`launch cancel` signals only the processes a local launch started (issue 17).

A pid names a process only while it lives; the kernel gives the number to a later process
once it has exited. Cancel used to SIGTERM whatever held the recorded supervisor pid (a test
run once killed an unrelated `sleep`). Now each recorded process carries its start time, and
a pid or process group is signalled only while pid and start time both match. Real
processes throughout: a launcher subprocess supervising stand-in workers, `sleep` strangers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from click.testing import CliRunner

from psy_agents.backends.base import load_handle, save_handle
from psy_agents.backends.local_procs import identify, signal_group
from psy_agents.cli.main import cli
from tests.backends.helpers import pid_alive, records, standin_argv, wait_until

# `launch hpo` with the local backend, cut down: two stand-in workers, recorded through the
# registry like a real launch. argv: RUN_DIR MAX_RESTARTS WORKER_ARGV...
LAUNCHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from psy_agents.backends.base import LaunchRequest
    from psy_agents.backends.local import LocalBackend
    from psy_agents.backends.options import LocalOptions
    from psy_agents.backends.registry import start
    req = LaunchRequest(experiment="e1", n_workers=2, worker_argv=tuple(sys.argv[3:]),
                        run_dir=Path(sys.argv[1]))
    options = LocalOptions(max_restarts=int(sys.argv[2]), restart_delay_s=0, stop_grace_s=10)
    try:
        start(LocalBackend(options), req)
    except KeyboardInterrupt:
        sys.exit(130)
""")


def _launcher(tmp_path: Path, mode: str, max_restarts: int = 3) -> list[str]:
    rec = tmp_path / "rec"
    rec.mkdir(exist_ok=True)
    return [sys.executable, "-c", LAUNCHER, str(tmp_path / "runs" / "e1"), str(max_restarts),
            *standin_argv(rec, mode)]


def _cancel(tmp_path: Path, monkeypatch) -> tuple[int, str]:
    monkeypatch.setenv("PSY_LAUNCH_DIR", str(tmp_path / "no-profiles"))
    result = CliRunner().invoke(cli, ["cancel", "--experiment", "e1",
                                      "--runs-dir", str(tmp_path / "runs")])
    return result.exit_code, result.output


def _stranger() -> subprocess.Popen:
    """An unrelated process that, like a worker, leads its own process group."""
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def _stop(launcher: subprocess.Popen) -> None:
    """After a failed test: SIGTERM the launcher (our child), which stops every worker
    group it started; SIGKILL would leave the workers' children running."""
    launcher.terminate()  # Popen signals nothing once the child was reaped
    with contextlib.suppress(subprocess.TimeoutExpired):
        launcher.wait(timeout=30)
    launcher.kill()
    launcher.wait()


def _running_launch(tmp_path: Path, launcher: subprocess.Popen) -> list[int]:
    """Wait until both sleeping workers run and are recorded; their pids and children's."""
    rec, run_dir = tmp_path / "rec", tmp_path / "runs" / "e1"
    wait_until(lambda: all(records(rec, i) for i in range(2)), 30, "both workers to start")
    wait_until(lambda: [w["state"] for w in load_handle(run_dir).data.get("workers", [])]
               == ["running"] * 2, 10, "the handle to record both workers running")
    assert launcher.poll() is None
    return [p for i in range(2) for r in records(rec, i) for p in (r["pid"], r["child_pid"])]


def test_cancel_after_the_workers_exited_leaves_processes_that_took_their_pids_alone(
        tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "e1"
    subprocess.run(_launcher(tmp_path, "done"), check=True, timeout=60)
    handle = load_handle(run_dir)
    assert [w["state"] for w in handle.data["workers"]] == ["succeeded", "succeeded"]
    strangers = [_stranger(), _stranger()]
    try:
        # The handle a launcher killed outright leaves (its workers still recorded running),
        # after the launcher's pid and worker 0's went to other processes: the same pid
        # numbers, other start times. Worker 1's process is simply gone.
        data = copy.deepcopy(handle.data)
        data["supervisor"].update(pid=strangers[0].pid, pgid=strangers[0].pid)
        for w in data["workers"]:
            w["state"] = "running"
        data["workers"][0].update(pid=strangers[1].pid, pgid=strangers[1].pid)
        save_handle(run_dir, dataclasses.replace(handle, job_id=str(strangers[0].pid),
                                                 data=data))
        assert _cancel(tmp_path, monkeypatch) == (
            0, "nothing to cancel: the local workers of e1 (launch 1) have exited\n")
        time.sleep(0.3)  # a SIGTERM'd sleep would be gone by now
        assert [s.poll() for s in strangers] == [None, None], "cancel signalled a stranger"
    finally:
        for s in strangers:
            s.kill()
            s.wait()


def test_cancel_stops_running_workers_through_their_launcher(tmp_path, monkeypatch):
    launcher = subprocess.Popen(_launcher(tmp_path, "sleep"))
    try:
        pids = _running_launch(tmp_path, launcher)
        assert _cancel(tmp_path, monkeypatch) == (
            0, "cancelled 2 local worker(s) of e1 (launch 1)\n")
        assert launcher.wait(timeout=60) == 130  # it got the SIGTERM and stopped the groups
    finally:
        _stop(launcher)
    assert [p for p in pids if pid_alive(p)] == []
    assert _cancel(tmp_path, monkeypatch) == (  # idempotent
        0, "nothing to cancel: the local workers of e1 (launch 1) have exited\n")


def test_cancel_stops_worker_groups_itself_when_the_launcher_pid_is_not_provably_ours(
        tmp_path, monkeypatch):
    launcher = subprocess.Popen(_launcher(tmp_path, "sleep", max_restarts=0))
    try:
        pids = _running_launch(tmp_path, launcher)
        # The recorded launcher started at another time: its pid now holds another process
        # (this launcher plays it), which must not be signalled; the workers still are ours.
        handle = load_handle(tmp_path / "runs" / "e1")
        data = copy.deepcopy(handle.data)
        data["supervisor"]["start_time"] -= 1000
        save_handle(tmp_path / "runs" / "e1", dataclasses.replace(handle, data=data))
        assert _cancel(tmp_path, monkeypatch) == (
            0, "cancelled 2 local worker(s) of e1 (launch 1)\n")
        # Not signalled (that would exit 130): it saw both workers end and returned.
        assert launcher.wait(timeout=60) == 0
    finally:
        _stop(launcher)
    assert [p for p in pids if pid_alive(p)] == []  # each worker's whole group stopped


def test_a_handle_recorded_without_start_times_is_never_signalled(tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "e1"
    run_dir.mkdir(parents=True)
    stranger = _stranger()
    try:
        # Written by a psy-agents from before start times were recorded, its launcher
        # killed outright; the pid since went to an unrelated process.
        (run_dir / "backend.json").write_text(json.dumps({
            "backend": "local", "experiment": "e1", "job_id": str(stranger.pid), "launch": 1,
            "data": {"workers_per_gpu": 1, "workers": [
                {"index": 0, "pid": stranger.pid, "state": "running", "restarts": 0,
                 "exit_codes": [], "log": str(run_dir / "logs" / "worker-0.log")}]}}))
        pid = stranger.pid
        assert _cancel(tmp_path, monkeypatch) == (0, (
            f"not cancelled: the local workers of e1 (launch 1): recorded without process "
            f"start times (by an older psy-agents), so pid {pid} may now be another program; "
            f"check `ps -o pid,lstart,args -p {pid}` and `kill` the ones that are this "
            "experiment's launcher or workers\n"))
        time.sleep(0.3)  # a SIGTERM'd sleep would be gone by now
        assert stranger.poll() is None, "cancel signalled an unproven pid"
    finally:
        stranger.kill()
        stranger.wait()
    assert _cancel(tmp_path, monkeypatch) == (
        0, "nothing to cancel: the local workers of e1 (launch 1) have exited\n")


def test_a_process_group_is_signalled_only_through_its_leader():
    # `sh` leads its own group and starts a `sleep` in it: the sleep is provably itself, but
    # it does not lead the group, so proving it proves nothing about the group's leader.
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], text=True,
                              stdout=subprocess.PIPE, start_new_session=True)
    try:
        member = identify(int(leader.stdout.readline()))
        assert member is not None and member.pgid == leader.pid != member.pid
        assert signal_group(member) is False
        time.sleep(0.3)  # a SIGTERM'd group would be gone by now
        assert leader.poll() is None and pid_alive(member.pid), "the group was signalled"
        assert signal_group(identify(leader.pid)) is True  # its leader: the whole group
        assert leader.wait(timeout=10) == -signal.SIGTERM
        wait_until(lambda: not pid_alive(member.pid), 10, "the group's sleep to stop")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
        leader.stdout.close()
