"""Progress people can see: one renderer for `launch hpo`, `launch hpo --follow` and
`launch status --watch`, and the batch bars of `launch train` and `launch eval`.

On a terminal, :class:`LiveLines` rewrites one line in place (``\\r`` + clear to the end of
the line), or redraws a block of lines on a cleared screen; anywhere else (a log file, CI)
it writes plain lines, and only when they changed. :class:`ProgressReporter` polls in a
daemon thread beside a command that blocks (the local backend's ``submit``).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TextIO

from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.results import all_status, progress_line
from psy_agents.hpo.storage_url import scrub

POLL_S = 2.0  # how often `launch hpo` reads the database for its live line
_JOIN_S = 10.0  # a poll stuck on the database no longer holds up the launcher's exit
_LINE_START = "\r\x1b[K"  # carriage return, then clear to the end of the line
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _reported_columns(stream: TextIO) -> int:
    """The terminal's width as it reports it; 0 when unknown (some ptys report 0 x 0)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 0


def _columns(stream: TextIO) -> int:
    return _reported_columns(stream) or shutil.get_terminal_size().columns


class LiveLines:
    """Shows the latest progress lines on ``stream``.

    On a TTY (``tty`` None: ``stream.isatty()``) one line is rewritten in place, cut to the
    terminal's width so it never wraps; several lines are redrawn on a cleared screen. Off
    a TTY each new set of lines is written once, plainly: the same lines twice in a row are
    written once. Thread-safe; :meth:`close` ends the live line, after which nothing is shown.
    """

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._shown: list[str] | None = None
        self._open_line = False  # a TTY line without its newline yet
        self._closed = False
        self._lock = threading.Lock()

    def show(self, lines: Sequence[str]) -> None:
        """Show ``lines`` (idempotent: the lines already shown are not written again)."""
        lines = list(lines)
        with self._lock:
            if self._closed or lines == self._shown:
                return
            if not self.tty:
                self.stream.write("".join(f"{line}\n" for line in lines))
            elif len(lines) == 1:
                self.stream.write(_LINE_START + lines[0][:max(20, _columns(self.stream) - 1)])
                self._open_line = True
            else:
                self.stream.write(_CLEAR_SCREEN + "".join(f"{line}\n" for line in lines))
                self._open_line = False
            self._shown = lines
            self.stream.flush()

    def close(self) -> None:
        """End the live line with a newline, so what follows starts on its own line.
        Idempotent."""
        with self._lock:
            if self._open_line:
                self.stream.write("\n")
                self.stream.flush()
            self._open_line, self._closed = False, True


class _Unavailable(Exception):
    """A read of the progress failed; the message is ready to show (password masked)."""


class ProgressReporter:
    """A context manager that shows ``read_lines()`` every ``every_s`` seconds in a daemon
    thread while its body runs (the body is the foreground; this only watches it).

    Leaving the body stops the thread and joins it (at most ``_JOIN_S``); a body that
    returned gets one last read, so the final state is shown; then the live line ends. An
    exception of the body (Ctrl-C included) goes through unchanged. A failing read is shown
    as one line and retried at the next poll: a display never ends or hides the search it
    watches.
    """

    def __init__(self, read_lines: Callable[[], list[str]], out: LiveLines,
                 every_s: float = POLL_S) -> None:
        self.read_lines, self.out, self.every_s = read_lines, out, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=_JOIN_S)
        if exc_type is None and not self._thread.is_alive():
            self._show()
        self.out.close()

    def _show(self) -> None:
        try:
            lines = self.read_lines()
        except Exception as exc:  # noqa: BLE001 - shown; the next poll tries again
            why = str(exc) if isinstance(exc, _Unavailable) else f"{type(exc).__name__}: {exc}"
            lines = [f"progress unavailable: {why}".splitlines()[0]]
        self.out.show(lines)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._show()
            self._stop.wait(self.every_s)


def campaign_reader(storage_url: str, experiment: str) -> Callable[[], list[str]]:
    """``read_lines`` for :class:`ProgressReporter`: the experiment's progress line, read
    through a storage of its own, opened at the first call (in the reporter's thread)."""
    storage: Any = None

    def read() -> list[str]:
        nonlocal storage
        try:
            if storage is None:
                storage = open_storage(storage_url)
            return [progress_line(all_status(storage, experiment))]
        except Exception as exc:  # the reporter shows the message: never with the password
            raise _Unavailable(scrub(f"{type(exc).__name__}: {exc}", storage_url)) from None

    return read


def batch_bars(stream: TextIO | None = None) -> Callable[[str, int], Any] | None:
    """A factory ``(description, total) -> tqdm bar`` drawing on ``stream`` (stderr), or
    None when it is not a terminal: bars in a log file are noise."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None
    from tqdm import tqdm

    # A terminal that reports no width would get an empty bar from dynamic_ncols.
    width = {"dynamic_ncols": True} if _reported_columns(stream) else {"ncols": _columns(stream)}

    def bar(desc: str, total: int) -> Any:
        return tqdm(total=total, desc=desc, file=stream, leave=False, unit="batch",
                    mininterval=0.5, **width)

    return bar
