"""The backend registry — the one table of backends — and the one door through which
workers are started.

Each backend class names its options dataclass (``options_cls``); ``--backend`` choices,
the prefixed flags and profile loading all come from :data:`REGISTRY`.

``start`` checks availability before anything is created, takes the experiment's next launch
number, submits, and records the handle under ``runs/<experiment>/backend.json`` beside the
experiment's earlier launches, for ``launch status`` and ``launch cancel``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from psy_agents.backends.base import (
    Backend,
    Cancelled,
    Handle,
    LaunchRequest,
    WorkerState,
    forget_launch,
    load_handles,
    reserve_launch,
    save_handle,
)
from psy_agents.backends.k8s import K8sBackend
from psy_agents.backends.local import LocalBackend
from psy_agents.backends.options import PROFILE_DIR, default_profile_path
from psy_agents.backends.slurm import SlurmBackend
from psy_agents.config import from_mapping, read_toml
from psy_agents.errors import BackendError, ConfigError

REGISTRY: dict[str, type] = {cls.name: cls for cls in (LocalBackend, SlurmBackend, K8sBackend)}


def options_class(name: str) -> type:
    """The options dataclass of backend ``name``; ConfigError naming the valid ones."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown backend {name!r}", f"use one of {', '.join(REGISTRY)}")
    return REGISTRY[name].options_cls


def load_options(backend: str, *, profile: Path | None = None,
                 overrides: Mapping[str, Any] | None = None,
                 profile_dir: Path = PROFILE_DIR) -> Any:
    """Build ``backend``'s options: overrides > profile file > defaults.

    Args:
        profile: a TOML file; None reads the default profile ``<profile_dir>/<backend>.toml``
            if it exists (a missing default profile means plain defaults; a missing
            explicit one is an error).
        overrides: already-typed values from flags or env vars.

    Raises:
        ConfigError: unknown backend, unknown key (listing valid keys), wrong type.
    """
    cls = options_class(backend)
    data: dict[str, Any] = {}
    path = profile if profile is not None else default_profile_path(backend, profile_dir)
    if profile is not None or path.exists():
        data.update(read_toml(path))
    data.update(overrides or {})
    return from_mapping(cls, data, source=str(path))


def get_backend(name: str, options: Any = None) -> Backend:
    """An instance of backend ``name`` with ``options`` (None: that backend's defaults)."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}",
                          f"use one of {', '.join(REGISTRY)}") from None
    return cls(options) if options is not None else cls()


def start(backend: Backend, req: LaunchRequest) -> Handle:
    """check_available -> reserve the next launch number -> submit as that launch -> save
    the handle beside the experiment's earlier launches. Returns the handle.

    A failed submission leaves no record behind (its reserved number is dropped). For
    ``local`` this blocks until the workers are done (see LocalBackend.submit).
    """
    backend.check_available()
    launch = reserve_launch(req.run_dir, backend.name, req.experiment)
    try:
        handle = backend.submit(dataclasses.replace(req, launch=launch))
    except BaseException:
        forget_launch(req.run_dir, launch)  # only if the backend recorded nothing for it
        raise
    save_handle(req.run_dir, handle)
    return handle


# Options a handle records because status/cancel must reach the same cluster as submit did.
_HANDLE_OPTIONS = {"k8s": ("namespace", "kubeconfig", "context")}


def backend_for_handle(handle: Handle, profile_dir: Path = PROFILE_DIR) -> Backend:
    """The backend that created ``handle``: default profile plus what the handle recorded."""
    recorded = {k: handle.data[k] for k in _HANDLE_OPTIONS.get(handle.backend, ())
                if handle.data.get(k) is not None}
    options = load_options(handle.backend, overrides=recorded, profile_dir=profile_dir)
    return get_backend(handle.backend, options)


def launch_states(run_dir: Path, profile_dir: Path = PROFILE_DIR
                  ) -> list[tuple[Handle, list[WorkerState] | BackendError]]:
    """Every recorded launch of ``run_dir`` (oldest first) with its workers' states, or
    the BackendError its backend answered (the other launches are still asked). A launch
    reserved but not submitted has no states (``[]``).

    Raises:
        BackendError: nothing was recorded under ``run_dir``.
    """
    out: list[tuple[Handle, list[WorkerState] | BackendError]] = []
    for handle in load_handles(run_dir):
        try:
            states = (backend_for_handle(handle, profile_dir).status(handle)
                      if handle.submitted else [])
        except BackendError as exc:
            states = exc
        out.append((handle, states))
    return out


def cancel_experiment(run_dir: Path, profile_dir: Path = PROFILE_DIR
                      ) -> list[tuple[Handle, Cancelled]]:
    """Cancel the workers of every launch recorded under ``run_dir``, each on its own
    backend. Idempotent. Returns each submitted launch, oldest first, with what its
    backend did.

    Raises:
        BackendError: nothing was recorded, or a backend could not cancel; every other
            launch is cancelled first, and the first failure is raised.
    """
    done: list[tuple[Handle, Cancelled]] = []
    failures: list[BackendError] = []
    for handle in (h for h in load_handles(run_dir) if h.submitted):
        try:
            done.append((handle, backend_for_handle(handle, profile_dir).cancel(handle)))
        except BackendError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return done
