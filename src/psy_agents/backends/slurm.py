"""Slurm backend: one job array of N tasks submitted through submitit.

The sbatch script is produced by submitit's own ``_make_sbatch_string`` (a private API,
pinned by tests/cli/golden/hpo-slurm*.sh and by a test comparing it with the script a real
submission wrote), so ``--dry-run`` prints exactly what ``submit`` hands to sbatch. Each
array task runs :class:`~psy_agents.backends.slurm_task.SlurmWorkerTask`; secrets reach it
through the environment Slurm exports from the submitting shell, never through the script.
With K workers per GPU each array task runs ``launch worker ... --procs K``: K worker
processes on the task's GPU (see :mod:`psy_agents.backends.slot`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from psy_agents.backends.base import (
    Cancelled,
    Handle,
    LaunchRequest,
    WorkerState,
    parse_index_ranges,
)
from psy_agents.backends.options import SlurmOptions
from psy_agents.backends.slot import slot_comment
from psy_agents.backends.slurm_task import SlurmWorkerTask
from psy_agents.errors import BackendError

SUBMITIT_COMMAND = "-u -m submitit.core._submit"
_STATE_MAP = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
              "REQUEUE_FED": "pending", "PREEMPTED": "pending", "SUSPENDED": "pending",
              "RUNNING": "running", "COMPLETING": "running", "CONFIGURING": "running",
              "COMPLETED": "succeeded", "CANCELLED": "stopped"}


class SlurmBackend:
    """See the module docstring. ``submit`` returns once sbatch accepted the array."""

    name = "slurm"
    options_cls = SlurmOptions

    def __init__(self, options: SlurmOptions | None = None) -> None:
        self.options = options or SlurmOptions()

    def check_available(self) -> None:
        """Raises BackendError when sbatch or sacct (submitit reads states with it) is missing."""
        for tool in ("sbatch", "sacct"):
            if shutil.which(tool) is None:
                raise BackendError(f"`{tool}` not found on PATH, so Slurm cannot be used here",
                                   "run on a Slurm login node or use --backend local")

    def default_gpus_per_worker(self) -> int:
        """Cluster workers are GPU workers: one GPU each (``--gpus-per-worker 0`` for CPU)."""
        return 1

    def worker_paths(self, data_dir: Path, runs_dir: Path) -> tuple[str, str]:
        """The profile's shared-filesystem folders, else the launcher's absolute ones (a
        login node and its compute nodes usually share the home and project filesystems)."""
        opts = self.options
        return (opts.data_dir or str(Path(data_dir).resolve()),
                opts.runs_dir or str(Path(runs_dir).resolve()))

    def folder(self, req: LaunchRequest) -> Path:
        """The submitit folder; ``%j`` keeps each job's pickles and logs apart."""
        base = Path(self.options.folder) if self.options.folder else req.run_dir / "slurm"
        return (base / "%j").expanduser().absolute()

    def python(self) -> str:
        opts = self.options
        if opts.apptainer_image:
            binds = "".join(f" --bind {shlex.quote(b)}" for b in opts.apptainer_binds)
            return (f"apptainer exec --nv{binds} {shlex.quote(opts.apptainer_image)} "
                    f"{opts.python or 'python3'}")
        return opts.python or shlex.quote(sys.executable)

    def sbatch_params(self, req: LaunchRequest) -> dict[str, Any]:
        """Parameters in submitit's sbatch vocabulary (used by both render and submit)."""
        opts = self.options
        params: dict[str, Any] = {
            "job_name": f"psy-{req.experiment}", "time": opts.time_min, "nodes": 1,
            "ntasks_per_node": 1, "cpus_per_task": opts.cpus_per_task,
            "array_parallelism": opts.array_parallelism, "signal_delay_s": opts.signal_delay_s,
            # Preempted tasks go back to the queue instead of failing; then the site's own
            # options, passed through (the options class refuses any of ours).
            "additional_parameters": {"requeue": True, **{
                k.lstrip("-").replace("-", "_"): v for k, v in sorted(opts.additional.items())}},
        }
        gpus = opts.gpus_per_node if opts.gpus_per_node is not None else req.gpus_per_worker
        if opts.gres:
            params["gres"] = opts.gres
        elif gpus:
            params["gpus_per_node"] = gpus
        if opts.mem_gb is not None:
            mem = opts.mem_gb
            params["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{int(mem * 1024)}MB"
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(opts, key):
                params[key] = getattr(opts, key)
        # The worker command travels in submitit's pickle, not in the script; this comment
        # shows it, so `--dry-run` says what each task will run (and where).
        where = f" (inside {opts.apptainer_image})" if opts.apptainer_image else ""
        params["setup"] = [f"# worker of each array task{where}: "
                           f"{shlex.join(req.slot_command)} --index <array task index>",
                           *slot_comment(req, "array task"), *opts.setup]
        return params

    def render(self, req: LaunchRequest) -> str:
        """The sbatch script submit() would hand to sbatch (secret values never appear)."""
        from submitit.slurm.slurm import _make_sbatch_string

        command = " ".join([self.python(), SUBMITIT_COMMAND, shlex.quote(str(self.folder(req)))])
        # submitit submits one delayed call as a plain job and several as an array.
        map_count = req.n_workers if req.n_workers > 1 else None
        return _make_sbatch_string(command=command, folder=self.folder(req),
                                   map_count=map_count, **self.sbatch_params(req))

    def _task(self, req: LaunchRequest):
        return SlurmWorkerTask(req.slot_command, req.env, self.options.max_requeues)

    def submit(self, req: LaunchRequest) -> Handle:
        """Submit the array; raises BackendError on a missing secret or an sbatch refusal."""
        import submitit

        secrets = req.secret_env()
        missing = [n for n in req.secret_env_names if n not in secrets]
        if missing:
            raise BackendError(f"{missing[0]} is not set in this shell, and Slurm workers "
                               "inherit it from here", f"export {missing[0]}=... and retry")
        executor = submitit.AutoExecutor(folder=self.folder(req), cluster="slurm",
                                         slurm_max_num_timeout=self.options.max_requeues,
                                         slurm_python=self.python())
        executor.update_parameters(**{f"slurm_{k}": v for k, v in self.sbatch_params(req).items()})
        try:
            with exported(secrets):  # sbatch exports this environment to the tasks
                jobs = executor.map_array(self._task(req), list(range(req.n_workers)))
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.output or b"").decode(errors="replace").strip()
            raise BackendError(f"sbatch refused the job array: {detail.splitlines()[-1:] or exc}",
                               "check the partition/account/qos/time in launch/slurm.toml") from None
        array_id = jobs[0].job_id.split("_")[0]
        return Handle("slurm", req.experiment, array_id,
                      {"folder": str(self.folder(req)), "n_workers": req.n_workers,
                       "workers_per_gpu": req.workers_per_gpu}, launch=req.launch)

    def status(self, handle: Handle) -> list[WorkerState]:
        """One ``sacct`` query for the whole array."""
        self.check_available()
        out = subprocess.run(["sacct", "-j", handle.job_id, "-X", "-n", "-P",
                              "-o", "JobID,State,ExitCode"],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise BackendError(f"sacct failed for job {handle.job_id}: {out.stderr.strip()}",
                               "check that slurmdbd is up (`sacctmgr show cluster`)")
        states = parse_sacct(out.stdout, handle.job_id)
        n = int(handle.data.get("n_workers", len(states)))
        return [WorkerState(i, *states.get(i, ("unknown", "not in sacct yet"))) for i in range(n)]

    def cancel(self, handle: Handle) -> Cancelled:
        """``scancel`` the whole array. Idempotent: scancel of a finished job is a no-op,
        reported as ``ended`` (``-v`` makes scancel say "Job/step already completing or
        completed", which it otherwise keeps to itself)."""
        if shutil.which("scancel") is None:
            raise BackendError("`scancel` not found on PATH", "run on a Slurm login node")
        out = subprocess.run(["scancel", "-v", handle.job_id], capture_output=True, text=True,
                             check=False)
        ended = "already complet" in out.stderr
        if out.returncode != 0 and not ended:
            raise BackendError(f"scancel {handle.job_id} failed: {out.stderr.strip()}",
                               "check the job with `squeue -j` and your permissions")
        return Cancelled(ended=ended)


@contextlib.contextmanager
def exported(env: dict[str, str]):
    """``env`` set in this process's environment for the duration (sbatch, which submitit
    runs, hands its environment to the job), then restored as it was."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def parse_sacct(text: str, array_id: str) -> dict[int, tuple[str, str]]:
    """Map array index -> (normalized state, raw state) from ``sacct -P`` lines.

    Pending remainders of an array are listed as ranges (``12_[2-5%2]``) and expanded; a
    plain job (one worker) is index 0.
    """
    out: dict[int, tuple[str, str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 2 or not parts[1]:
            continue
        if parts[0] == array_id:  # a single worker is a plain job, not an array
            indexes = [0]
        elif parts[0].startswith(f"{array_id}_"):
            indexes = parse_index_ranges(parts[0].split("_", 1)[1])
        else:
            continue
        raw = parts[1].split()[0]
        state = _STATE_MAP.get(raw, "failed")
        for index in indexes:
            out[index] = (state, raw)
    return out

