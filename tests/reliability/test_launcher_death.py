"""A launcher killed outright (SIGKILL: no handler runs) does not leave its workers running.

Real `launch hpo` with the local backend and 2 workers on the simulated objective. The
workers are armed with PR_SET_PDEATHSIG=SIGTERM, their "checkpoint and requeue" signal, so
they stop when the launcher dies; before, they ran on unsupervised (seen when a pytest
timeout killed a launcher).
"""

from __future__ import annotations

import os
import signal
import subprocess

from psy_agents.backends.local import pid_alive
from tests.backends.helpers import wait_until
from tests.reliability.helpers import FAST_HEARTBEAT, launch_argv, launch_env, worker_pids


def test_workers_stop_when_the_launcher_is_sigkilled(tmp_path):
    run_dir = tmp_path / "runs" / "orphan"
    args = ["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
            "--trials", "100000", "--workers", "2", "--experiment", "orphan",
            "--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    with open(tmp_path / "launcher.log", "w") as log:
        launcher = subprocess.Popen(launch_argv(*args), cwd=tmp_path,
                                    env=launch_env(FAST_HEARTBEAT), stdout=log,
                                    stderr=subprocess.STDOUT)
    try:
        pids = wait_until(lambda: len(worker_pids(run_dir)) == 2 and worker_pids(run_dir), 90,
                          "2 running workers")
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=10)
        wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 60,
                   f"workers {sorted(pids.values())} to stop after the launcher died")
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for pid in worker_pids(run_dir).values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    logs = "\n".join(p.read_text() for p in sorted((run_dir / "logs").glob("*.log")))
    assert "Traceback" not in logs, logs[-3000:]
