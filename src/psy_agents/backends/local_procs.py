"""Proof that a recorded local process is still the one a launch started.

A pid names a process only while that process lives: once it has exited, the kernel may
give the number to any process started later. The local backend therefore records, for its
supervisor and for every worker, the pid, the process group and the start time (psutil's
``create_time()``), and signals a pid only while the process holding it started at the
recorded time, and a process group only while its leader is such a process. Everything
else (a process that has exited, a pid that now belongs to another process, a record
written before start times were recorded) is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from psy_agents.backends.base import Cancelled, Handle

# create_time is clock ticks since boot (10 ms each) plus the boot time, as a float: two
# readings of one process differ only by float rounding, and the kernel hands a pid out
# again only after cycling through the others, far more than one tick later.
START_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class ProcIdentity:
    """A process as recorded when it was started.

    Attributes:
        pid: its process id.
        pgid: its process group id (a worker leads its own group: ``pgid == pid``).
        start_time: ``psutil.Process(pid).create_time()``, seconds since the epoch.
    """

    pid: int
    pgid: int
    start_time: float

    def to_record(self) -> dict[str, Any]:
        """The JSON fields that :meth:`from_record` reads back."""
        return {"pid": self.pid, "pgid": self.pgid, "start_time": self.start_time}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any] | None) -> ProcIdentity | None:
        """The identity in a handle record, or None when the record holds no start time
        (written before start times were recorded, or the process was never started)."""
        if not rec or rec.get("pid") is None or rec.get("start_time") is None:
            return None
        return cls(int(rec["pid"]), int(rec.get("pgid", rec["pid"])), float(rec["start_time"]))


def identify(pid: int) -> ProcIdentity | None:
    """The identity of process ``pid``, or None when there is no such process.

    Call it before the process is reaped (a child that exited stays readable until its
    parent waits for it), so a worker that exits at once is still identified.
    """
    try:
        proc = psutil.Process(pid)
        return ProcIdentity(pid, os.getpgid(pid), proc.create_time())
    except (psutil.Error, ProcessLookupError):
        return None


def is_ours(ident: ProcIdentity) -> bool:
    """True while the live process at ``ident.pid`` started at ``ident.start_time``.

    A process that exited (a zombie included) or a pid now held by another process is
    False. A step of the system clock shifts every create_time, so after one even our own
    processes read False: the safe side. Never raises for a missing process.
    """
    if not pid_alive(ident.pid):
        return False
    try:
        started = psutil.Process(ident.pid).create_time()
    except psutil.Error:  # exited since
        return False
    return abs(started - ident.start_time) <= START_TOLERANCE_S


def signal_process(ident: ProcIdentity, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to ``ident``'s process if :func:`is_ours`; True when it was sent.

    The identity check and the signal are two steps; the pid cannot be reused between them
    unless the kernel hands out every other free pid in that instant. Idempotent.
    """
    if not is_ours(ident):
        return False
    with contextlib.suppress(ProcessLookupError):  # exited since the check: nothing to stop
        os.kill(ident.pid, sig)
        return True
    return False


def signal_group(ident: ProcIdentity, sig: int = signal.SIGTERM) -> bool:
    """Send ``sig`` to the process group ``ident`` leads, only while its leader is ours:
    ``ident`` recorded a group leader (``pgid == pid``), :func:`is_ours` holds, and the
    process still leads that group. True when it was sent. Idempotent."""
    if ident.pgid != ident.pid or not is_ours(ident):
        return False
    try:
        if os.getpgid(ident.pid) != ident.pgid:
            return False
        os.killpg(ident.pgid, sig)
    except ProcessLookupError:  # exited since the check: nothing to stop
        return False
    return True


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie counts as gone); says nothing about
    *which* process holds the pid (that is :func:`is_ours`)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cancel_launch(handle: Handle) -> Cancelled:
    """Stop the workers of a local launch, signalling only processes proved to be its own.

    When the supervisor is ours and records running workers, it gets SIGTERM and stops each
    worker's group in order (SIGTERM, SIGKILL after its grace); they are counted as
    stopped. Otherwise (the launcher was killed outright) each running worker's group whose
    leader is ours gets SIGTERM directly. Processes that exited, and pids now held by other
    processes, are skipped. A handle written before start times were recorded proves
    nothing: nothing is signalled, and ``refused`` names the recorded pids still alive.

    Returns:
        ``Cancelled(stopped=N)``, with ``ended=True`` when nothing was running. Idempotent.
    """
    running = [r for r in handle.data.get("workers", [])
               if r.get("state") == "running" and r.get("pid") is not None]
    if not running:  # every worker's end was recorded
        return Cancelled(stopped=0, ended=True)
    supervisor = ProcIdentity.from_record(handle.data.get("supervisor"))
    workers = [ProcIdentity.from_record(r) for r in running]
    if supervisor is None or None in workers:
        return _unproven([int(handle.job_id), *(int(r["pid"]) for r in running)])
    if signal_process(supervisor):
        return Cancelled(stopped=len(running))
    stopped = sum(signal_group(w) for w in workers if w is not None)
    return Cancelled(stopped=stopped, ended=stopped == 0)


def _unproven(pids: list[int]) -> Cancelled:
    """A launch recorded without start times: no signal; name the pids still alive."""
    alive = ",".join(str(p) for p in dict.fromkeys(pids) if pid_alive(p))
    if not alive:
        return Cancelled(stopped=0, ended=True)
    return Cancelled(stopped=0, refused=(
        f"recorded without process start times (by an older psy-agents), so pid {alive} "
        f"may now be another program; check `ps -o pid,lstart,args -p {alive}` and "
        "`kill` the ones that are this experiment's launcher or workers"))
