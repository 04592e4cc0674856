"""Local backend: N worker subprocesses supervised in the foreground.

Each worker gets one GPU slot through ``CUDA_VISIBLE_DEVICES`` (or ``""`` for CPU), its own
process group, and a log ``runs/<experiment>/logs/worker-<i>.log`` (appended across
restarts); a later launch of the same experiment (launch n >= 2) logs under
``logs/launch-<n>/``, so two workers of one index never write one log. With K workers per
GPU the backend starts the N*K processes itself: process i runs in slot ``i // K`` with
``--gpu-share K``, and is logged, restarted and reported on its own (more slots than visible
GPUs are refused then: a GPU would hold 2K processes of 1/K each).

A worker that crashes is restarted up to ``max_restarts`` times; one that exits 0 is done;
one that exits 75 ("requeue me") is restarted too; one that exits 2 (a user error: bad
settings, unusable data) is failed at once, as a restart would fail the same way. Ctrl-C
(SIGINT) or SIGTERM to the launcher stops every worker's whole process group: SIGTERM first, so workers save a
checkpoint, SIGKILL after ``stop_grace_s``. No child outlives the launcher's return, nor
the launcher itself: a launcher killed outright (SIGKILL) leaves its workers a SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from psy_agents.backends.base import Cancelled, Handle, LaunchRequest, WorkerState, save_handle
from psy_agents.backends.local_procs import ProcIdentity, cancel_launch, identify, pid_alive
from psy_agents.backends.options import LocalOptions
from psy_agents.errors import EXIT_REQUEUE, USAGE_EXIT, BackendError

POLL_S = 0.2


def detect_devices(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """GPU ids visible to this launcher: CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return tuple(d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip())
    if shutil.which("nvidia-smi") is None:
        return ()
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return tuple(str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU"))


def assign_gpu_slots(n_workers: int, gpus_per_worker: int,
                     devices: tuple[str, ...]) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each worker.

    Devices are cut into slots of ``gpus_per_worker`` ids; worker i gets slot
    ``i % n_slots``, so more workers than slots share GPUs round-robin. With
    ``gpus_per_worker == 0`` every worker gets ``""`` (CPU only).

    Raises:
        BackendError: GPUs were asked for but fewer than ``gpus_per_worker`` are visible.
    """
    if gpus_per_worker == 0:
        return [""] * n_workers
    n_slots = len(devices) // gpus_per_worker
    if n_slots == 0:
        raise BackendError(
            f"{gpus_per_worker} GPU(s) per worker asked for, but {len(devices)} visible",
            "pass --gpus-per-worker 0 for CPU workers or set CUDA_VISIBLE_DEVICES")
    slots = [",".join(devices[s * gpus_per_worker:(s + 1) * gpus_per_worker])
             for s in range(n_slots)]
    return [slots[i % n_slots] for i in range(n_workers)]


@dataclass
class _Worker:
    index: int
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    state: str = "pending"
    history: list[int] = field(default_factory=list)  # exit codes of finished attempts
    started: ProcIdentity | None = None  # the current attempt's process, for cancel


class _Stop(Exception):
    """Raised in the supervisor by SIGTERM, so it unwinds like Ctrl-C."""


class LocalBackend:
    """See the module docstring. ``submit`` blocks until every worker is done."""

    name = "local"
    options_cls = LocalOptions

    def __init__(self, options: LocalOptions | None = None) -> None:
        self.options = options or LocalOptions()

    def check_available(self) -> None:
        """Always available; nothing to check beyond the request itself."""

    def default_gpus_per_worker(self) -> int:
        """One GPU per worker when GPUs are visible (the profile's ``devices``, else
        CUDA_VISIBLE_DEVICES / nvidia-smi), else CPU workers."""
        devices = self.options.devices if self.options.devices is not None else detect_devices()
        return 1 if devices else 0

    def worker_paths(self, data_dir: Path, runs_dir: Path) -> tuple[str, str]:
        """Workers run on this machine: the launcher's folders, made absolute."""
        return str(Path(data_dir).resolve()), str(Path(runs_dir).resolve())

    def _plan(self, req: LaunchRequest) -> list[_Worker]:
        devices = self.options.devices
        if devices is None:
            devices = detect_devices() if req.gpus_per_worker else ()
        slots = assign_gpu_slots(req.n_workers, req.gpus_per_worker, devices)
        k, logs = req.workers_per_gpu, log_dir(req)
        free = len(devices) // max(1, req.gpus_per_worker)
        if k > 1 and req.gpus_per_worker and req.n_workers > free:
            # Round-robin would put 2K processes on a GPU, each still capped at 1/K of it.
            raise BackendError(
                f"--workers {req.n_workers} with --workers-per-gpu {k} asks for "
                f"{req.n_workers} GPU slots, but {free} GPU(s) are visible",
                f"use --workers {free} and --workers-per-gpu "
                f"{-(-req.n_processes // free)} (the same number of processes)")
        threads = cpu_threads_env(req.n_processes)
        return [_Worker(index=i, argv=req.argv_for(i),
                        env={**threads, **req.env, "CUDA_VISIBLE_DEVICES": slots[i // k]},
                        log=logs / f"worker-{i}.log") for i in range(req.n_processes)]

    def render(self, req: LaunchRequest) -> str:
        """One shell line per worker; secret values are never shown, only their names."""
        many = (f" ({req.n_workers} GPU slot(s) x {req.workers_per_gpu} processes)"
                if req.workers_per_gpu > 1 else "")
        lines = [f"# {req.n_processes} local worker(s){many}; logs under {log_dir(req)}"]
        if req.secret_env_names:
            lines.append(f"# inherited from this shell: {' '.join(req.secret_env_names)}")
        for w in self._plan(req):
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(w.env.items()))
            lines.append(f"env {env} {shlex.join(w.argv)} >>{shlex.quote(str(w.log))} 2>&1")
        return "\n".join(lines) + "\n"

    def submit(self, req: LaunchRequest) -> Handle:
        """Start the workers and supervise them until each exits 0 or fails for good.

        The handle file is rewritten whenever a worker starts or ends, so ``launch status``
        and ``launch cancel`` work from another shell meanwhile.

        Raises:
            KeyboardInterrupt: after Ctrl-C, once every worker's process group is gone.
        """
        workers = self._plan(req)
        log_dir(req).mkdir(parents=True, exist_ok=True)
        previous = _install_sigterm()
        try:
            return self._supervise(req, workers)
        finally:
            _stop_all(workers, self.options.stop_grace_s)
            signal.signal(signal.SIGTERM, previous)
            save_handle(req.run_dir, _handle(req, workers))

    def _supervise(self, req: LaunchRequest, workers: list[_Worker]) -> Handle:
        base_env = {**os.environ, **req.secret_env()}
        for w in workers:
            _start(w, base_env)
        save_handle(req.run_dir, _handle(req, workers))
        try:
            while any(w.state == "running" for w in workers):
                time.sleep(POLL_S)
                if any(self._reap(w, base_env) for w in workers):
                    save_handle(req.run_dir, _handle(req, workers))
        except _Stop:
            raise KeyboardInterrupt from None
        return _handle(req, workers)

    def _reap(self, w: _Worker, base_env: dict[str, str]) -> bool:
        """Handle worker ``w`` if it exited; True when its state changed."""
        if w.state != "running" or w.proc is None or w.proc.poll() is None:
            return False
        code = w.proc.returncode
        w.history.append(code)
        _kill_group(w.proc.pid, signal.SIGKILL)  # leftovers of the worker's own children
        if code == 0:
            w.state = "succeeded"
        elif code == USAGE_EXIT:  # a user error: a restart would fail the same way
            w.state = "failed"
            _log(w, f"worker {w.index} exited with {code} (a user error, see above); "
                    "not restarted")
        elif w.restarts < self.options.max_restarts:
            kind = "asked to be requeued" if code == EXIT_REQUEUE else f"exited with {code}"
            _log(w, f"worker {w.index} {kind}; restart {w.restarts + 1}"
                    f"/{self.options.max_restarts}")
            time.sleep(self.options.restart_delay_s)
            w.restarts += 1
            _start(w, base_env)
        else:
            w.state = "failed"
            _log(w, f"worker {w.index} exited with {code}; no restarts left")
        return True

    def status(self, handle: Handle) -> list[WorkerState]:
        """States as last recorded by the supervisor; running ones are checked against /proc."""
        alive = pid_alive(int(handle.job_id))
        out = []
        for rec in handle.data.get("workers", []):
            state = rec["state"]
            if state == "running" and not (alive and pid_alive(rec["pid"])):
                state = "stopped"
            out.append(WorkerState(rec["index"], state,
                                   f"pid {rec['pid']}, restarts {rec['restarts']}, log {rec['log']}"))
        return out

    def cancel(self, handle: Handle) -> Cancelled:
        """Stop the launch's workers, signalling only processes proved to be the ones it
        started (see :func:`~psy_agents.backends.local_procs.cancel_launch`). Idempotent."""
        return cancel_launch(handle)


def log_dir(req: LaunchRequest) -> Path:
    """``runs/<experiment>/logs`` for the first launch, ``logs/launch-<n>`` for launch n."""
    logs = req.run_dir / "logs"
    return logs if req.launch == 1 else logs / f"launch-{req.launch}"


def die_with_parent():
    """A ``preexec_fn`` that makes the child get SIGTERM when the launcher dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG``), or ``None`` where that does not exist. SIGTERM is
    the worker's "checkpoint and requeue" signal, so its trial resumes when the search is
    relaunched instead of running on unsupervised. ``prctl`` is looked up here, in the
    parent: the child runs no import (a lock held by another thread at fork would hang it).
    """
    parent = os.getpid()
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the launcher died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def cpu_threads_env(n_workers: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """``OMP_NUM_THREADS`` giving each of ``n_workers`` processes on this host its share of
    the CPU cores, unless the user set it. Without it every worker's torch starts one thread
    per core: N workers oversubscribe the cores N times and their OpenMP threads spin on
    each other (a 2-worker training run on 2 cores crawled at a fraction of 1 worker's speed).
    In a Slurm task the cores are the task's ``SLURM_CPUS_PER_TASK``, not the node's (the
    affinity mask is the whole node where Slurm does not bind tasks to cores).
    """
    environ = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" in environ:
        return {}
    cores: int | None = None
    if environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        cores = int(environ["SLURM_CPUS_PER_TASK"])
    elif hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count()
    return {"OMP_NUM_THREADS": str(max(1, (cores or 1) // max(1, n_workers)))}


def _start(w: _Worker, base_env: dict[str, str]) -> None:
    w.log.parent.mkdir(parents=True, exist_ok=True)
    _log(w, f"# attempt {len(w.history) + 1}: {shlex.join(w.argv)} "
            f"(CUDA_VISIBLE_DEVICES={w.env['CUDA_VISIBLE_DEVICES']!r})")
    with open(w.log, "ab") as fh:
        # Own session = own process group: the whole tree can be signalled at once, and a
        # terminal's Ctrl-C reaches only the supervisor, which then stops workers in order.
        w.proc = subprocess.Popen(w.argv, env={**base_env, **w.env}, stdout=fh,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True, preexec_fn=die_with_parent())
    w.started = identify(w.proc.pid)  # not reaped yet, so readable even if it exited
    w.state = "running"


def _log(w: _Worker, line: str) -> None:
    with open(w.log, "a") as fh:
        fh.write(line + "\n")


def _stop_all(workers: list[_Worker], grace_s: float) -> None:
    """SIGTERM every live worker group, wait up to ``grace_s``, then SIGKILL the groups."""
    live = [w for w in workers if w.proc is not None and w.proc.poll() is None]
    for w in live:
        _kill_group(w.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(w.proc.poll() is None for w in live) and time.monotonic() < deadline:
        time.sleep(POLL_S / 2)
    for w in workers:
        if w.proc is not None:
            _kill_group(w.proc.pid, signal.SIGKILL)
            w.proc.wait()
            if w.state == "running":
                w.state = "stopped"


def _kill_group(pgid: int, sig: int) -> None:
    # A group that is already gone is what we wanted.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _install_sigterm():
    def handler(signum, frame):
        raise _Stop()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave SIGTERM as it is
        return signal.getsignal(signal.SIGTERM)


def _handle(req: LaunchRequest, workers: list[_Worker]) -> Handle:
    recs = [{"index": w.index, "pid": w.proc.pid if w.proc else None, "state": w.state,
             "restarts": w.restarts, "exit_codes": w.history, "log": str(w.log),
             **(w.started.to_record() if w.started else {})}
            for w in workers]
    me = identify(os.getpid())
    return Handle("local", req.experiment, str(os.getpid()),
                  {"workers": recs, "workers_per_gpu": req.workers_per_gpu,
                   "supervisor": me.to_record() if me else None}, launch=req.launch)
