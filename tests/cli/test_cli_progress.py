"""Live progress: `launch hpo` on a pseudo-terminal and through a pipe, and the renderer.

The campaigns use the `simulated` objective (sleep-based epochs of 0.05 s on average, most
trials pruned by ASHA after an epoch or two): 12 trials of up to 20 epochs keep one local
worker busy for ~8 s, so the launcher's 2-second polls see the count move mid-run.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from psy_agents.cli.progress import LiveLines, ProgressReporter

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_on_pty(argv: list[str], cwd: Path, env: dict[str, str], timeout: float,
               seen_while_running=None) -> tuple[int, str, bool]:
    """Run ``argv`` with a pseudo-terminal (200 columns) as stdin, stdout and stderr.

    Returns (exit code, everything it wrote, whether ``seen_while_running(text so far)``
    turned true on output read while the process was still running).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                            close_fds=True)
    os.close(slave)
    chunks, hit, deadline = [], False, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            running = proc.poll() is None
            if not select.select([master], [], [], 0.2)[0]:
                if not running:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has exited
                break
            if not data:
                break
            chunks.append(data)
            if running and seen_while_running and not hit:
                hit = bool(seen_while_running(b"".join(chunks).decode("utf-8", "replace")))
        else:
            pytest.fail(f"{argv[3:5]} still running after {timeout} s: {b''.join(chunks)!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace"), hit


def _hpo_argv(pg_url: str, tmp_path: Path, trials: int) -> list[str]:
    return [sys.executable, "-m", "psy_agents.cli.main", "hpo", "--agent", "criteria",
            "--objective", "simulated", "--stage", "s1", "--trials", str(trials),
            "--epochs", "20", "--storage", pg_url, "--runs-dir", str(tmp_path / "runs"),
            "--experiment", "x"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PSY_DATA_DIR": str(REPO / "data" / "sample")}
    env.pop("PSY_STORAGE", None)
    return env


def _counts(text: str, budget: int) -> list[int]:
    return [int(n) for n in re.findall(rf"(?:^|\r|\n)(?:\x1b\[K)?s1 (\d+)/{budget} run=", text)]


@pytest.mark.postgres
def test_local_hpo_on_a_terminal_rewrites_one_live_line(pg_url, tmp_path):
    trials = 12

    def mid_run(text: str) -> bool:
        return any(0 < n < trials for n in _counts(text, trials))

    code, text, shown_mid_run = run_on_pty(_hpo_argv(pg_url, tmp_path, trials), tmp_path,
                                           _env(), timeout=120, seen_while_running=mid_run)
    assert code == 0, text[-3000:]
    # a count strictly between 0 and the budget was on screen while the search still ran
    assert shown_mid_run, text
    # rewritten in place: carriage return + clear-line before each state, one line wide
    live = re.findall(r"\r\x1b\[Ks1 \d+/12 run=\d+ best=\S+ eta \S+", text)
    assert len(live) >= 2, repr(text)
    assert re.search(r"\r\x1b\[Kdone: 1 study, \d+ trials finished\r?\n", text), repr(text)
    assert "x.criteria.s1  [####################]" in text  # the summary, after it


@pytest.mark.postgres
def test_local_hpo_through_a_pipe_writes_plain_lines_when_they_change(pg_url, tmp_path):
    out = subprocess.run(_hpo_argv(pg_url, tmp_path, 8), cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and not ANSI.search(out.stderr)
    lines = [line for line in out.stderr.splitlines() if not line.startswith("created ")]
    assert len(lines) >= 3 and lines[-1].startswith("done: 1 study"), out.stderr
    assert all(re.fullmatch(r"s1 \d+/8 run=\d+ best=\S+ eta \S+", line)
               for line in lines[:-1]), out.stderr
    assert all(a != b for a, b in zip(lines, lines[1:], strict=False)), out.stderr


# --- the renderer and the reporter, alone ---------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_change_is_one_plain_line():
    buf = io.StringIO()
    out = LiveLines(buf)
    for lines in (["a 0/3"], ["a 0/3"], ["a 1/3"], ["a 1/3"], ["a 2/3", "w"]):
        out.show(lines)
    out.close()
    out.show(["late"])
    assert buf.getvalue() == "a 0/3\na 1/3\na 2/3\nw\n"


def test_on_a_terminal_one_line_is_rewritten_in_place_and_ended_on_close():
    buf = _Tty()
    out = LiveLines(buf)
    out.show(["s1 1/9"])
    out.show(["s1 1/9"])
    out.show(["s1 2/9 " + "x" * 500])
    out.close()
    text = buf.getvalue()
    assert text.startswith("\r\x1b[Ks1 1/9\r\x1b[Ks1 2/9 x") and text.endswith("\n")
    assert text.count("\r") == 2 and len(text.splitlines()[0].split("\r")[-1]) < 300
    block = _Tty()
    LiveLines(block).show(["a", "b"])  # several lines: a redrawn screen
    assert block.getvalue() == "\x1b[H\x1b[2Ja\nb\n"


def test_the_reporter_shows_read_errors_and_lets_the_body_raise():
    buf = io.StringIO()
    calls = []

    def read() -> list[str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away\nsecond line")
        return [f"s1 {min(len(calls), 3)}/3"]

    reporter = ProgressReporter(read, LiveLines(buf), every_s=0.01)
    with pytest.raises(KeyboardInterrupt), reporter:
        while len(calls) < 5:
            time.sleep(0.01)
        raise KeyboardInterrupt
    assert not reporter._thread.is_alive()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "progress unavailable: RuntimeError: database went away"
    assert lines[1:] == ["s1 2/3", "s1 3/3"]
