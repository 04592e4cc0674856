"""`launch dashboard` serves optuna-dashboard on the study storage (a real subprocess on a
free port, queried over HTTP), and a taken port is a one-line error (exit 2)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.reporting.conftest import STUDY, build_study

LAUNCH = str(Path(sys.executable).with_name("launch"))
STARTUP_LIMIT_S = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _poll_studies(proc: subprocess.Popen, port: int) -> dict:
    """GET /api/studies until the server answers; fail if the process dies or never answers."""
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited with {proc.returncode}: "
                                 f"{proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as rsp:
                return json.loads(rsp.read())
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise AssertionError(f"dashboard did not answer within {STARTUP_LIMIT_S} s")


def test_dashboard_serves_the_study(sqlite_url: str):
    build_study(sqlite_url, n_trials=3)
    port = _free_port()
    proc = subprocess.Popen([LAUNCH, "dashboard", "--storage", sqlite_url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        payload = _poll_studies(proc, port)
        names = [s["study_name"] for s in payload["study_summaries"]]
        assert names == [STUDY]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    first = proc.stdout.read().splitlines()[0]
    assert first == (f"optuna-dashboard: open http://127.0.0.1:{port}/ "
                     f"(storage {sqlite_url}; Ctrl-C stops)")


def test_dashboard_on_a_taken_port_is_one_line_error(sqlite_url: str):
    build_study(sqlite_url, n_trials=1)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        proc = subprocess.run([LAUNCH, "dashboard", "--storage", sqlite_url, "--port", str(port)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""  # no "open http://..." line for a server that never started
    assert proc.stderr == (f"error: cannot listen on 127.0.0.1:{port}: "
                           "Address already in use — pick another --port or --host\n")


def test_dashboard_on_an_unknown_host_is_one_line_error(sqlite_url: str):
    build_study(sqlite_url, n_trials=1)
    proc = subprocess.run([LAUNCH, "dashboard", "--storage", sqlite_url, "--host",
                           "no-such-host.invalid", "--port", "8080"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot listen on no-such-host.invalid:8080: ")
    assert proc.stderr.endswith(" — pick another --port or --host\n")
