"""Backend options: one frozen dataclass per backend, defaults from a TOML profile.

Resolution (once, at the CLI edge): prefixed flag (``--slurm-partition``) > its env var
(``PSY_SLURM_PARTITION``) > profile ``launch/<backend>.toml`` > dataclass default
(:func:`psy_agents.backends.registry.load_options`). Units are in the field names
(``time_min``, ``mem_gb``). An unknown profile key is a ConfigError that lists the valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from psy_agents.errors import ConfigError


@dataclass(frozen=True)
class LocalOptions:
    """Local processes on this machine.

    Attributes:
        devices: GPU ids to hand out (None: ``CUDA_VISIBLE_DEVICES`` of the launcher, else
            the GPUs ``nvidia-smi -L`` lists, else none).
        max_restarts: restarts allowed per worker after a crash (then it counts as failed).
        restart_delay_s: pause before a crashed worker is restarted.
        stop_grace_s: on Ctrl-C, how long workers get to save a checkpoint before SIGKILL.
    """

    devices: tuple[str, ...] | None = None
    max_restarts: int = 3
    restart_delay_s: float = 1.0
    stop_grace_s: float = 30.0

    def __post_init__(self) -> None:
        _at_least(self.max_restarts, 0, "max_restarts")
        _at_least(self.stop_grace_s, 0, "stop_grace_s")
        _at_least(self.restart_delay_s, 0, "restart_delay_s")


@dataclass(frozen=True)
class SlurmOptions:
    """One Slurm job array of N tasks, submitted with submitit.

    Attributes:
        gpus_per_node: GPUs per task (None: the request's gpus_per_worker); ignored when
            ``gres`` is set, which is passed verbatim (``gpu:a100:1``).
        setup: shell lines run in the sbatch script before the worker (module loads, ...).
        apptainer_image: run the worker inside ``apptainer exec --nv IMAGE``.
        apptainer_binds: ``--bind`` of each (``/project/redsm5:/data``): the host folders
            the image sees, so that ``data_dir`` and ``runs_dir`` are paths inside it.
        max_requeues: how often a task may ask to be requeued (exit 75) or time out.
        folder: submitit folder (None: ``runs/<experiment>/slurm``).
        signal_delay_s: seconds before the time limit at which the task gets SIGUSR2.
        python: command that runs Python on the nodes (None: this launcher's interpreter,
            or ``python3`` inside the Apptainer image).
        data_dir, runs_dir: the data and runs folders as the nodes see them (a shared
            filesystem; inside the Apptainer image, the paths it binds). None: the
            launcher's absolute ``--data-dir`` / ``--runs-dir``.
        additional: any other sbatch option, passed through (``mail_type = "END"`` ->
            ``#SBATCH --mail-type=END``; reservation, exclude, dependency, licenses ...).
            Options psy-agents sets itself are refused: set their own key instead.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 1440
    mem_gb: float | None = None
    cpus_per_task: int = 4
    gpus_per_node: int | None = None
    gres: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()
    apptainer_image: str | None = None
    apptainer_binds: tuple[str, ...] = ()
    array_parallelism: int = 256
    max_requeues: int = 10
    folder: str | None = None
    signal_delay_s: int = 120
    python: str | None = None
    data_dir: str | None = None
    runs_dir: str | None = None
    additional: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.additional:
            _not_ours(key)
        _one_gpu(self.gpus_per_node, "gpus_per_node")
        _one_gpu(gres_gpus(self.gres), "gres")
        _at_least(self.time_min, 1, "time_min")
        _at_least(self.cpus_per_task, 1, "cpus_per_task")
        _at_least(self.array_parallelism, 1, "array_parallelism")
        _at_least(self.max_requeues, 0, "max_requeues")


@dataclass(frozen=True)
class K8sOptions:
    """One batch/v1 Indexed Job.

    Attributes:
        secret_name, secret_key: the Secret holding the storage URL (never the URL itself).
        pvc_name: a PersistentVolumeClaim mounted at ``checkpoint_mount`` (None: no volume).
        gpus: ``nvidia.com/gpu`` per pod (None: the request's gpus_per_worker).
        queue_name: Kueue LocalQueue; adds the ``kueue.x-k8s.io/queue-name`` label.
        tolerations: profile-only, a list of Kubernetes toleration tables.
        kubeconfig, context: which cluster (None: $KUBECONFIG / ~/.kube/config, or in-cluster).
        data_dir: the ReDSM5 folder inside the pod: where ``data_pvc`` is mounted
            (read-only), or a path baked into the image when ``data_pvc`` is None.
        data_pvc: a PersistentVolumeClaim holding the ReDSM5 CSV files (see k8s/README.md
            for putting them there).

    Workers write checkpoints, the cache and outputs under ``checkpoint_mount`` (the
    ``pvc_name`` volume), so an evicted pod's trial resumes on another node.
    """

    namespace: str = "psy-agents"
    image: str = "psy-agents:latest"
    image_pull_policy: str = "IfNotPresent"
    secret_name: str = "psy-storage"
    secret_key: str = "url"
    pvc_name: str | None = "psy-checkpoints"
    checkpoint_mount: str = "/checkpoints"
    data_dir: str = "/data"
    data_pvc: str | None = "psy-data"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict, ...] = ()
    queue_name: str | None = None
    backoff_limit_per_index: int = 3
    max_failed_indexes: int | None = None
    ttl_seconds_after_finished: int = 86400
    cpu: str = "4"
    memory: str = "16Gi"
    gpus: int | None = None
    service_account: str | None = None
    kubeconfig: str | None = None
    context: str | None = None

    def __post_init__(self) -> None:
        _one_gpu(self.gpus, "gpus")
        _at_least(self.backoff_limit_per_index, 0, "backoff_limit_per_index")
        _at_least(self.ttl_seconds_after_finished, 0, "ttl_seconds_after_finished")




# sbatch options psy-agents sets itself -> where the user sets them instead.
SLURM_OWN_OPTIONS = {
    "job_name": "--experiment", "time": "time_min", "nodes": None, "ntasks_per_node": None,
    "cpus_per_task": "cpus_per_task", "array": "--workers and array_parallelism",
    "signal": "signal_delay_s", "requeue": None, "mem": "mem_gb", "gres": "gres",
    "gpus_per_node": "gpus_per_node (or --gpus-per-worker)", "gpus": "--gpus-per-worker",
    "partition": "partition", "account": "account", "qos": "qos", "constraint": "constraint",
    "output": "folder", "error": "folder", "open_mode": None, "wckey": None,
}


def _not_ours(key: str) -> None:
    name = key.lstrip("-").replace("-", "_")
    if name in SLURM_OWN_OPTIONS:
        where = SLURM_OWN_OPTIONS[name]
        raise ConfigError(
            f"`additional` sets the sbatch option {key!r}, which psy-agents sets itself",
            f"drop it from `additional` and set {where} instead" if where
            else "drop it from `additional`")


def gres_gpus(gres: str | None) -> int | None:
    """The GPU count a ``--gres`` string asks for (``gpu:a100:2`` -> 2, ``gpu`` -> 1);
    None when it asks for no GPU."""
    for item in (gres or "").split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            return int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return None


def _one_gpu(gpus: int | None, name: str) -> None:
    if gpus is not None and gpus > 1:
        raise ConfigError(
            f"the value of `{name}` asks for {gpus} GPUs per worker, but a trial trains on "
            "one GPU, so the others would sit idle",
            f"ask for 1 GPU per worker in `{name}` and start more workers")


def _at_least(value: float, low: float, name: str) -> None:
    if value < low:
        raise ConfigError(f"the value of `{name}` is {value}, but must be >= {low}",
                          f"fix `{name}` in the profile or its flag")


PROFILE_DIR = Path("launch")


def default_profile_path(backend: str, profile_dir: Path = PROFILE_DIR) -> Path:
    """``<profile_dir>/<backend>.toml`` (the CLI passes ``$PSY_LAUNCH_DIR`` when set)."""
    return Path(profile_dir) / f"{backend}.toml"
