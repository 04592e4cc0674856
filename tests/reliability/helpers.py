"""Helpers shared by the reliability tests: run `launch`, read trials, check invariants."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FAST_HEARTBEAT = {"PSY_HEARTBEAT_INTERVAL_S": "1", "PSY_GRACE_PERIOD_S": "3"}


def launch_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any storage/tracking set by the caller's shell."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PSY_STORAGE", "MLFLOW_TRACKING_URI")}
    return {**env, "PSY_DATA_DIR": str(REPO / "data" / "sample"), **(extra or {})}


def launch_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "psy_agents.cli.main", *args]


def run_launch(args, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run(launch_argv(*args), cwd=cwd, env=launch_env(env),
                          capture_output=True, text=True, timeout=timeout)


def worker_pids(run_dir: Path) -> dict[int, int]:
    """index -> pid of the local workers recorded in ``run_dir/backend.json`` (running ones)."""
    path = run_dir / "backend.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:  # caught mid-rewrite; the next poll reads it whole
        return {}
    return {w["index"]: w["pid"] for w in data.get("data", data).get("workers", [])
            if w.get("state") == "running" and w.get("pid")}


def chains(trials) -> dict[int, list]:
    """Trials grouped by the trial their retry chain started from, in number order."""
    out: dict[int, list] = defaultdict(list)
    for t in sorted(trials, key=lambda t: t.number):
        out[t.user_attrs.get("original_trial", t.number)].append(t)
    return dict(out)


def all_text_under(path: Path) -> str:
    return "\n".join(f.read_bytes().decode("utf-8", "replace")
                     for f in path.rglob("*") if f.is_file())


def campaign_under_fault(args, cwd: Path, run_dir: Path,
                         fault: Callable[[subprocess.Popen], Any], *, timeout_s: float = 180):
    """Run `launch ARGS` in the background with fast heartbeats, call ``fault(launcher)``
    while it runs, then wait for it (SIGINT after ``timeout_s``).

    Returns (exit code, launcher + worker logs, what ``fault`` returned).
    """
    with open(cwd / "launcher.log", "w") as log:
        launcher = subprocess.Popen(launch_argv(*args), cwd=cwd, env=launch_env(FAST_HEARTBEAT),
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            result = fault(launcher)
            code = launcher.wait(timeout=timeout_s)
        finally:
            if launcher.poll() is None:
                launcher.send_signal(signal.SIGINT)
                launcher.wait(timeout=60)
    logs = "\n".join(p.read_text() for p in [cwd / "launcher.log",
                                              *sorted((run_dir / "logs").glob("*.log"))])
    return code, logs, result
