"""The callable that submitit pickles and runs in each Slurm array task.

It runs the worker command as a subprocess with ``--index <array index>``. It holds only
the argv and the non-secret env: secrets such as PSY_STORAGE are read from the task's
environment, which Slurm exports from the submitting shell (sbatch's default
``--export=ALL``), so they never land in the pickle, the sbatch script or the logs.

Requeueing, both ways the worker can ask for it:
- preemption/timeout: Slurm sends SIGUSR2 (``--signal=USR2@signal_delay_s``); submitit calls
  :meth:`SlurmWorkerTask.checkpoint`, which lets the worker save and exit, then returns a
  fresh copy of this task, and submitit requeues the array task;
- the worker exits 75 by itself: the task requeues itself with ``scontrol requeue`` as long
  as ``SLURM_RESTART_COUNT`` is below ``max_requeues`` — unless the task got SIGTERM too,
  which means Slurm is ending it (scancel, its own requeue, preemption) and decides.
Either way the rerun starts the same worker command, which resumes from the storage and
its checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from psy_agents.backends.local import cpu_threads_env
from psy_agents.errors import EXIT_REQUEUE

POLL_S = 0.5


def slot_processes(argv: tuple[str, ...]) -> int:
    """How many worker processes the command starts (``--procs K``; 1 without it)."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "--procs" and value.isdigit():
            return int(value)
    return 1


class SlurmWorkerTask:
    """A picklable worker launcher. Call it with the worker index; returns 0 on success.

    Raises:
        RuntimeError: the worker failed (submitit records it as the task's error), or it
            asked to be requeued more than ``max_requeues`` times.
    """

    def __init__(self, worker_argv: tuple[str, ...], env: Mapping[str, str],
                 max_requeues: int, stop_grace_s: float = 60.0) -> None:
        self.worker_argv = tuple(worker_argv)
        self.env = dict(env)
        self.max_requeues = max_requeues
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen | None = None
        self._terminated = False

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_proc"] = None  # a live process handle is neither picklable nor meaningful
        return state

    def __call__(self, index: int) -> int:
        argv = [*self.worker_argv, "--index", str(index)]
        self._watch_sigterm()
        # The task's CPUs shared by the slot's processes: torch would start one thread per
        # core of the whole node (a 2-epoch trial took 5x longer on a 2-core node).
        threads = cpu_threads_env(slot_processes(self.worker_argv))
        self._proc = subprocess.Popen(argv, env={**os.environ, **threads, **self.env})
        # Poll instead of wait(): a blocking wait() holds the Popen lock, and checkpoint()
        # runs in a signal handler on this same thread, so it could never reap the child.
        while (code := self._proc.poll()) is None:
            time.sleep(POLL_S)
        if code == 0:
            return 0
        if code == EXIT_REQUEUE:
            time.sleep(1.0)  # let a SIGTERM sent to the whole step reach this process too
            if self._terminated:
                # Slurm itself is ending the task (scancel, its own requeue or preemption):
                # it decides what comes next, so asking for another requeue would undo a cancel.
                raise RuntimeError(f"worker {index} stopped by Slurm (SIGTERM); not requeued")
            self._requeue_self(index)
        raise RuntimeError(f"worker {index} exited with code {code}; see this task's log")

    def _watch_sigterm(self) -> None:
        """Remember a SIGTERM, then hand it on to submitit's own handler."""
        self._terminated = False
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum, frame):
            self._terminated = True
            if callable(previous):
                previous(signum, frame)

        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            signal.signal(signal.SIGTERM, on_term)

    def _requeue_self(self, index: int) -> None:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if restarts >= self.max_requeues:
            raise RuntimeError(f"worker {index} asked to be requeued after {restarts} "
                               f"requeues (max_requeues={self.max_requeues})")
        # submitit submits a single worker as a plain job, N > 1 as an array.
        if "SLURM_ARRAY_JOB_ID" in os.environ:
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        else:
            job = os.environ["SLURM_JOB_ID"]
        print(f"worker {index} exited {EXIT_REQUEUE}: requeueing {job} "
              f"(requeue {restarts + 1}/{self.max_requeues})", flush=True)
        subprocess.check_call(["scontrol", "requeue", job], timeout=60)
        # Slurm is about to kill this task; leave without writing a result, as submitit does.
        sys.exit(-1)

    def checkpoint(self, index: int):
        """Called by submitit on SIGUSR2: let the worker save, then return a fresh copy."""
        from submitit.helpers import DelayedSubmission

        proc = self._proc
        if proc is not None and proc.poll() is None:
            # Slurm signals the whole step, so the worker usually has SIGUSR2 already; a
            # second one is harmless and covers sites that signal only the batch shell.
            os.kill(proc.pid, signal.SIGUSR2)
            deadline = time.monotonic() + self.stop_grace_s
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        fresh = SlurmWorkerTask(self.worker_argv, self.env, self.max_requeues, self.stop_grace_s)
        return DelayedSubmission(fresh, index)
