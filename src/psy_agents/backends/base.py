"""The backend protocol: every backend starts N copies of the same worker command.

A backend differs only in *how* it starts the workers (local processes, a Slurm job array,
a Kubernetes Indexed Job). The launcher builds one :class:`LaunchRequest`, calls
``check_available()`` before anything is created, then ``submit()``, and records the
returned :class:`Handle` under ``runs/<experiment>/backend.json`` so ``launch status`` and
``launch cancel`` find the workers later.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
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
        n_workers: how many copies of the worker to start (>= 1).
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
    secret_values: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise BackendError(f"the value of `n_workers` is {self.n_workers}, but must be >= 1",
                               "pass --workers 1 or more")
        if not self.worker_argv:
            raise BackendError("the worker command is empty", "pass the `launch worker ...` argv")
        if self.gpus_per_worker < 0:
            raise BackendError(
                f"the value of `gpus_per_worker` is {self.gpus_per_worker}, but must be >= 0",
                "pass 0 for CPU workers")
        leaked = sorted(set(self.env) & set(self.secret_env_names))
        if leaked:
            raise BackendError(f"secret variable {leaked[0]} is also in the plain env",
                               "pass it only as a secret name")

    def argv_for(self, index: int) -> list[str]:
        """The full worker command of worker ``index``."""
        return [*self.worker_argv, "--index", str(index)]

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
        job_id: the backend's id (supervisor pid, Slurm array job id, k8s Job name).
        data: backend-specific extras (namespace, folder, per-worker pids, ...).
    """

    backend: str
    experiment: str
    job_id: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "backend.json") -> Handle:
        try:
            raw = json.loads(text)
            return cls(backend=raw["backend"], experiment=raw["experiment"],
                       job_id=str(raw["job_id"]), data=dict(raw.get("data", {})))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise BackendError(f"{source}: not a backend handle ({exc})",
                               "delete it and cancel the workers by hand") from None


@dataclass(frozen=True)
class WorkerState:
    """One worker's state, normalized across backends (``state`` is one of STATES)."""

    index: int
    state: str
    detail: str = ""


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

    def cancel(self, handle: Handle) -> None:
        """Stop every worker of ``handle``. Idempotent."""


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


def save_handle(run_dir: Path, handle: Handle) -> Path:
    """Write ``handle`` atomically to ``run_dir/backend.json`` and return the path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / HANDLE_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(handle.to_json() + "\n")
    os.replace(tmp, path)
    return path


def load_handle(run_dir: Path) -> Handle:
    """Read ``run_dir/backend.json``. Raises BackendError when there is none."""
    path = run_dir / HANDLE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BackendError(f"{path}: no workers were recorded for this experiment",
                           "check --experiment and --runs-dir") from None
    return Handle.from_json(text, source=str(path))
