"""The backend protocol: every backend starts N copies of the same worker command.

A backend differs only in *how* it starts the workers (local processes, a Slurm job array,
a Kubernetes Indexed Job). The launcher builds one :class:`LaunchRequest`, calls
``check_available()`` before anything is created, then ``submit()``, and records the
returned :class:`Handle` under ``runs/<experiment>/backend.json`` so ``launch status`` and
``launch cancel`` find the workers later.

An experiment may be launched several times (``launch hpo`` again adds workers to the same
studies, on any backend). Each launch has a number (1, 2, ...) and its own handle; the file
keeps them all: the latest launch at the top level, in the one-handle format of earlier
versions (which is still read, as launch 1), and the launches before it under ``earlier``::

    {"backend": "slurm", "experiment": "e", "job_id": "41", "launch": 2, "data": {...},
     "earlier": [{"backend": "local", "job_id": "7001", "launch": 1, ...}]}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from psy_agents.errors import BackendError

HANDLE_FILE = "backend.json"
# Normalized per-worker states across backends.
STATES = ("pending", "running", "succeeded", "failed", "stopped", "unknown")


@dataclass(frozen=True)
class LaunchRequest:
    """What to start, independent of where.

    Attributes:
        experiment: experiment name; names the run dir, the Slurm job and the k8s Job.
        n_workers: how many GPU slots to start (>= 1): local slots, Slurm array tasks, pods.
        workers_per_gpu: worker processes per slot (>= 1), ``n_workers * workers_per_gpu``
            in all. A slot started as one command (Slurm task, pod) runs
            :attr:`slot_command`, whose ``--procs K`` starts the K processes; the local
            backend starts each process itself (:meth:`argv_for`).
        launch: this launch's number among the experiment's launches (1 = the first);
            names the k8s Job and the local log folder of a later launch apart.
        worker_argv: the worker command WITHOUT the index; backends append ``--index I``.
        env: non-secret environment for every worker (written into scripts and manifests).
        secret_env_names: names of secret variables (e.g. ``PSY_STORAGE``). Local workers get
            them in their environment, Slurm workers through the environment sbatch exports;
            on k8s they come from a Secret. Values are never written into scripts,
            manifests, pickles or logs.
        secret_values: the values of ``secret_env_names`` (the launcher's resolved storage
            URL); a name without a value here is taken from the launcher's environment.
        run_dir: ``runs/<experiment>``; logs and the handle file go below it.
        gpus_per_worker: GPUs each worker gets (0 = CPU only).
        options: the selected backend's frozen options dataclass.
    """

    experiment: str
    n_workers: int
    worker_argv: tuple[str, ...]
    run_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env_names: tuple[str, ...] = ()
    gpus_per_worker: int = 0
    options: Any = None
    workers_per_gpu: int = 1
    launch: int = 1
    secret_values: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise BackendError(f"the value of `n_workers` is {self.n_workers}, but must be >= 1",
                               "pass --workers 1 or more")
        if not self.worker_argv:
            raise BackendError("the worker command is empty", "pass the `launch worker ...` argv")
        for name in ("workers_per_gpu", "launch"):
            if getattr(self, name) < 1:
                raise BackendError(
                    f"the value of `{name}` is {getattr(self, name)}, but must be >= 1",
                    "pass --workers-per-gpu 1 or more" if name == "workers_per_gpu"
                    else "number launches from 1")
        if self.gpus_per_worker < 0:
            raise BackendError(
                f"the value of `gpus_per_worker` is {self.gpus_per_worker}, but must be >= 0",
                "pass 0 for CPU workers")
        leaked = sorted(set(self.env) & set(self.secret_env_names))
        if leaked:
            raise BackendError(f"secret variable {leaked[0]} is also in the plain env",
                               "pass it only as a secret name")

    @property
    def n_processes(self) -> int:
        """Worker processes in all: ``n_workers * workers_per_gpu``."""
        return self.n_workers * self.workers_per_gpu

    @property
    def slot_command(self) -> tuple[str, ...]:
        """The command of one slot (a Slurm array task, a pod), without ``--index``: the
        worker command, plus ``--procs K`` when the slot runs K worker processes (slot I
        then runs the processes of indices ``I*K`` to ``I*K+K-1``)."""
        k = self.workers_per_gpu
        return (*self.worker_argv, "--procs", str(k)) if k > 1 else self.worker_argv

    def argv_for(self, index: int) -> list[str]:
        """The full command of worker process ``index`` when a backend starts each process
        itself; with K processes per GPU it carries ``--gpu-share K``."""
        k = self.workers_per_gpu
        share = ["--gpu-share", str(k)] if k > 1 else []
        return [*self.worker_argv, *share, "--index", str(index)]

    def secret_env(self) -> dict[str, str]:
        """The secret variables' values (``secret_values``, else this launcher's environment);
        names with neither are skipped."""
        given = {k: self.secret_values[k] for k in self.secret_env_names
                 if k in self.secret_values}
        inherited = {k: os.environ[k] for k in self.secret_env_names if k in os.environ}
        return {**inherited, **given}


@dataclass(frozen=True)
class Handle:
    """A JSON-serializable reference to submitted workers.

    Attributes:
        backend: registry key ("local", "slurm", "k8s").
        experiment: experiment name.
        job_id: the backend's id (supervisor pid, Slurm array job id, k8s Job name); empty
            while the launch is reserved but not yet submitted.
        data: backend-specific extras (namespace, folder, per-worker pids, ...).
        launch: the launch's number among the experiment's launches (1 = the first).
    """

    backend: str
    experiment: str
    job_id: str
    data: dict[str, Any] = field(default_factory=dict)
    launch: int = 1

    @property
    def submitted(self) -> bool:
        """False for a reserved launch whose workers were not submitted (yet)."""
        return bool(self.job_id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "backend.json") -> Handle:
        """A handle from its JSON object; one written before launches were numbered is
        launch 1. Raises BackendError when ``raw`` is not a handle."""
        try:
            return cls(backend=raw["backend"], experiment=raw["experiment"],
                       job_id=str(raw["job_id"]), data=dict(raw.get("data", {})),
                       launch=int(raw.get("launch", 1)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackendError(f"{source}: not a backend handle ({exc!r})",
                               "delete it and cancel the workers by hand") from None

    @classmethod
    def from_json(cls, text: str, *, source: str = "backend.json") -> Handle:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BackendError(f"{source}: not a backend handle ({exc})",
                               "delete it and cancel the workers by hand") from None
        return cls.from_dict(raw, source=source)


@dataclass(frozen=True)
class WorkerState:
    """One worker's state, normalized across backends (``state`` is one of STATES)."""

    index: int
    state: str
    detail: str = ""


@dataclass(frozen=True)
class Cancelled:
    """What ``Backend.cancel`` did to one launch (``launch cancel`` prints it as one line).

    Attributes:
        stopped: how many worker processes this call stopped, for a backend that signals
            processes itself (local); None for one that cancels a job by its id (Slurm,
            Kubernetes), which stops every task of it.
        ended: True when nothing of the launch was running any more: nothing was stopped.
        refused: why nothing was signalled although a recorded process may still run (a
            handle that cannot prove which processes are the launch's); "" otherwise.
    """

    stopped: int | None = None
    ended: bool = False
    refused: str = ""


class Backend(Protocol):
    """How N workers start. Implementations take their options dataclass in ``__init__``."""

    name: str

    def check_available(self) -> None:
        """Raise BackendError (one line) when the backend cannot be used from here."""

    def default_gpus_per_worker(self) -> int:
        """GPUs per worker when the user names none: 1 on clusters (workers are GPU
        workers), locally 1 when this machine has a visible GPU, else 0 (CPU)."""

    def worker_paths(self, data_dir: Path, runs_dir: Path) -> tuple[str, str]:
        """(data folder, runs folder) as the workers see them, given the launcher's: the
        launcher's own absolute paths locally, shared-filesystem paths on Slurm, the pod's
        mount paths on Kubernetes. The worker reads data from the first and writes its
        checkpoints, cache and outputs under the second."""

    def render(self, req: LaunchRequest) -> str:
        """The exact artefact submit() would create (sbatch script, Job YAML, commands)."""

    def submit(self, req: LaunchRequest) -> Handle:
        """Start the workers. Raises BackendError; nothing half-created is left behind."""

    def status(self, handle: Handle) -> list[WorkerState]:
        """One batched query for every worker's state."""

    def cancel(self, handle: Handle) -> Cancelled:
        """Stop every worker of ``handle`` and say what was done. Idempotent."""


def worker_command(head: tuple[str, ...], studies: tuple[str, ...], *, data_dir: str,
                   runs_dir: str) -> tuple[str, ...]:
    """The one worker command, without ``--index`` (each backend appends it): ``head``
    (how to run ``launch`` there) ``worker --study S ... --data-dir D --runs-dir R``, with
    the folders as the worker's machine sees them."""
    study_flags = tuple(x for s in studies for x in ("--study", s))
    return (*head, "worker", *study_flags, "--data-dir", str(data_dir), "--runs-dir",
            str(runs_dir))


def parse_index_ranges(spec: str | None) -> list[int]:
    """``"0-2,5"`` -> ``[0, 1, 2, 5]``: the index lists of sacct (``[0-3%2]``) and Job status."""
    out: list[int] = []
    for part in (spec or "").strip("[]").split("%")[0].split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.extend(range(int(lo), int(hi or lo) + 1))
    return out


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (the handle file's folder), so that launches
    of one experiment read and rewrite the handle file one at a time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _read_launches(run_dir: Path) -> list[Handle]:
    """Every recorded launch, oldest first ([] without a handle file)."""
    path = run_dir / HANDLE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackendError(f"{path}: not a backend handle ({exc})",
                           "delete it and cancel the workers by hand") from None
    earlier = raw.get("earlier", []) if isinstance(raw, dict) else []
    handles = [Handle.from_dict(h, source=str(path)) for h in [*earlier, raw]]
    return sorted(handles, key=lambda h: h.launch)


def _write_launches(run_dir: Path, handles: list[Handle]) -> Path:
    path = run_dir / HANDLE_FILE
    *earlier, latest = sorted(handles, key=lambda h: h.launch)
    payload = asdict(latest)
    if earlier:
        payload["earlier"] = [asdict(h) for h in earlier]
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: a reader sees the old file or the new one
    return path


def save_handle(run_dir: Path, handle: Handle) -> Path:
    """Record ``handle`` in ``run_dir/backend.json``, replacing the entry of the same
    launch number and keeping every other launch. Atomic; returns the path."""
    with _locked(run_dir):
        others = [h for h in _read_launches(run_dir) if h.launch != handle.launch]
        return _write_launches(run_dir, [*others, handle])


def next_launch(run_dir: Path) -> int:
    """The number the next launch of the experiment would get (1 when none is recorded)."""
    return max((h.launch for h in _read_launches(run_dir)), default=0) + 1


def reserve_launch(run_dir: Path, backend: str, experiment: str) -> int:
    """Take the next launch number, recording it as not yet submitted, so that two
    launchers starting at once get different numbers. Pair with :func:`forget_launch`
    when the submission fails."""
    with _locked(run_dir):
        handles = _read_launches(run_dir)
        number = max((h.launch for h in handles), default=0) + 1
        _write_launches(run_dir, [*handles, Handle(backend, experiment, "", launch=number)])
    return number


def forget_launch(run_dir: Path, launch: int) -> None:
    """Drop launch ``launch`` if it is still only reserved (nothing was submitted); a run
    dir left empty by that is removed too, so a failed first launch leaves nothing."""
    with _locked(run_dir):
        handles = _read_launches(run_dir)
        kept = [h for h in handles if h.launch != launch or h.submitted]
        if not kept:
            (run_dir / HANDLE_FILE).unlink(missing_ok=True)
        elif len(kept) < len(handles):
            _write_launches(run_dir, kept)
    with contextlib.suppress(OSError):  # not empty: other files of the experiment stay
        run_dir.rmdir()


def load_handles(run_dir: Path) -> list[Handle]:
    """Every launch recorded in ``run_dir/backend.json``, oldest first.

    Raises:
        BackendError: no handle file (nothing was launched), or it is not one.
    """
    handles = _read_launches(run_dir)
    if not handles:
        raise BackendError(f"{run_dir / HANDLE_FILE}: no workers were recorded for this "
                           "experiment", "check --experiment and --runs-dir")
    return handles


def load_handle(run_dir: Path) -> Handle:
    """The latest launch recorded in ``run_dir/backend.json``. Raises BackendError when
    there is none."""
    return load_handles(run_dir)[-1]
