"""One GPU slot running K worker processes (``launch hpo --workers-per-gpu K``).

A small model's trial uses a fraction of a modern GPU, so a slot (a local GPU slot, a Slurm
array task, a pod) may run K workers. A slot started as one command (Slurm, k8s) runs
``launch worker ... --procs K --index I``, which calls :func:`run_slot`: K child workers of
indices ``I*K`` to ``I*K+K-1``, each with ``--gpu-share K``. The local backend starts each
process itself, with the same ``--gpu-share K``. Each process then calls
:func:`share_gpu_memory` before its first trial, so no one of them can take the memory the
others need; a trial that runs out of its share is pruned with its cause (the objective's
error classification), as any out-of-memory trial is.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from psy_agents.backends.base import LaunchRequest
from psy_agents.backends.local import cpu_threads_env, die_with_parent
from psy_agents.errors import EXIT_REQUEUE, USAGE_EXIT
from psy_agents.lazy import lazy_import

torch = lazy_import("torch")

POLL_S = 0.2
FORWARDED = (signal.SIGTERM, signal.SIGUSR2)
_log = logging.getLogger("psy_agents.slot")


def combine_exit_codes(codes: Sequence[int]) -> int:
    """The exit code of a slot whose processes exited with ``codes``.

    75 ("requeue me") when any process asked to be requeued, so the slot's backend restarts
    it and the checkpointed trials resume; else 2 when any met a user error (k8s then fails
    the index instead of retrying it); else 0 only when all exited 0; else the first
    failure's code, a death by signal N reported as 128+N, as a shell does.
    """
    if EXIT_REQUEUE in codes:
        return EXIT_REQUEUE
    if USAGE_EXIT in codes:
        return USAGE_EXIT
    failed = [c for c in codes if c != 0]
    if not failed:
        return 0
    return 128 - failed[0] if failed[0] < 0 else failed[0]


def slot_indices(index: int, k: int) -> list[int]:
    """The worker indices slot ``index`` runs with ``k`` processes: ``index*k`` onwards."""
    return [index * k + j for j in range(k)]


def slot_comment(req: LaunchRequest, slot: str) -> list[str]:
    """Comment lines saying what a ``slot`` (array task, pod) of ``req`` runs; none when it
    runs one worker."""
    k = req.workers_per_gpu
    if k == 1:
        return []
    return [f"# each {slot} I runs {k} worker processes, indices {k}*I to {k}*I+{k - 1} "
            f"(`--procs {k}`), each with 1/{k} of the GPU's memory"]


def run_slot(argv: Sequence[str], k: int, index: int, *,
             env: Mapping[str, str] | None = None) -> int:
    """Run ``k`` workers ``[*argv, "--gpu-share", k, "--index", index*k+j]`` and wait for
    all of them; returns :func:`combine_exit_codes` of their exit codes.

    SIGTERM and SIGUSR2 to this process are forwarded to every live child (a pod's SIGTERM
    reaches only its first process); the children also get SIGTERM when this process dies,
    however it dies. A child that ends early is not restarted here: the slot's backend
    restarts the whole slot, as it restarts a single worker. ``env`` is added to this
    process's environment for the children, with each child's share of the CPU threads
    (``OMP_NUM_THREADS``) unless the user set it.
    """
    child_env = {**os.environ, **cpu_threads_env(k), **(env or {})}
    procs: list[subprocess.Popen] = []

    def forward(signum, _frame) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    previous = {}
    for sig in FORWARDED:
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            previous[sig] = signal.signal(sig, forward)
    try:
        for i in slot_indices(index, k):
            procs.append(subprocess.Popen(
                [*argv, "--gpu-share", str(k), "--index", str(i)], env=child_env,
                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent()))
        _log.info("slot %d: worker processes %s", index, ", ".join(
            f"{i} (pid {p.pid})" for i, p in zip(slot_indices(index, k), procs, strict=True)))
        # Poll rather than wait(): a signal handler that forwards runs on this thread.
        while any(p.poll() is None for p in procs):
            time.sleep(POLL_S)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.returncode for p in procs]
    code = combine_exit_codes(codes)
    _log.info("slot %d: exit codes %s -> %d", index, codes, code)
    return code


def nvidia_visible(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process may see an NVIDIA GPU, decided without importing torch:
    ``CUDA_VISIBLE_DEVICES`` does not hide them all, and the driver's device nodes exist
    (``/dev/nvidia0``..., or ``/dev/dxg`` under WSL)."""
    env = os.environ if environ is None else environ
    if env.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/dxg")


def share_gpu_memory(k: int, cuda: Any = None) -> float | None:
    """Let this process use at most ``1/k`` of each visible GPU's memory
    (``torch.cuda.set_per_process_memory_fraction``); returns the fraction, or None when
    nothing was set: ``k == 1``, or no CUDA device (then torch is not even imported).

    ``cuda`` stands in for ``torch.cuda`` (tests). Call it before the first trial: the
    limit applies to allocations made after it.
    """
    if k <= 1:
        return None
    if cuda is None:
        if not nvidia_visible():
            return None
        cuda = torch.cuda
    if not cuda.is_available():
        return None
    fraction = 1.0 / k
    for device in range(cuda.device_count()):
        cuda.set_per_process_memory_fraction(fraction, device)
    return fraction
