"""Backends start N copies of `launch worker`: local processes, a Slurm array, a k8s Job.

Importing this package is cheap: submitit and kubernetes are imported only when a Slurm or
k8s backend actually renders, submits or queries.
"""

from psy_agents.backends.base import (
    Backend,
    Handle,
    LaunchRequest,
    WorkerState,
    load_handle,
    load_handles,
    save_handle,
)
from psy_agents.backends.registry import REGISTRY, get_backend, start

__all__ = ["REGISTRY", "Backend", "Handle", "LaunchRequest", "WorkerState", "get_backend",
           "load_handle", "load_handles", "save_handle", "start"]
