"""The backend registry and the one door through which workers are started.

``start`` checks availability before anything is created, submits, and records the handle
under ``runs/<experiment>/backend.json`` for ``launch status`` and ``launch cancel``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psy_agents.backends.base import (
    Backend,
    Handle,
    LaunchRequest,
    WorkerState,
    load_handle,
    save_handle,
)
from psy_agents.backends.k8s import K8sBackend
from psy_agents.backends.local import LocalBackend
from psy_agents.backends.options import load_options
from psy_agents.backends.slurm import SlurmBackend
from psy_agents.errors import ConfigError

REGISTRY: dict[str, type] = {"local": LocalBackend, "slurm": SlurmBackend, "k8s": K8sBackend}


def get_backend(name: str, options: Any = None) -> Backend:
    """An instance of backend ``name`` with ``options`` (None: that backend's defaults)."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}",
                          f"use one of {', '.join(REGISTRY)}") from None
    return cls(options) if options is not None else cls()


def start(backend: Backend, req: LaunchRequest) -> Handle:
    """check_available -> submit -> save the handle. Returns the handle.

    For ``local`` this blocks until the workers are done (see LocalBackend.submit).
    """
    backend.check_available()
    handle = backend.submit(req)
    save_handle(req.run_dir, handle)
    return handle


# Options a handle records because status/cancel must reach the same cluster as submit did.
_HANDLE_OPTIONS = {"k8s": ("namespace", "kubeconfig", "context")}


def backend_for_handle(handle: Handle) -> Backend:
    """The backend that created ``handle``: default profile plus what the handle recorded."""
    recorded = {k: handle.data[k] for k in _HANDLE_OPTIONS.get(handle.backend, ())
                if handle.data.get(k) is not None}
    return get_backend(handle.backend, load_options(handle.backend, overrides=recorded))


def worker_states(run_dir: Path) -> tuple[Handle, list[WorkerState]]:
    """The recorded handle of ``run_dir`` and its workers' states (for ``launch status``)."""
    handle = load_handle(run_dir)
    return handle, backend_for_handle(handle).status(handle)


def cancel_experiment(run_dir: Path) -> Handle:
    """Cancel the workers recorded under ``run_dir``. Idempotent. Returns the handle."""
    handle = load_handle(run_dir)
    backend_for_handle(handle).cancel(handle)
    return handle
