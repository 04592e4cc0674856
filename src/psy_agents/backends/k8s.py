"""Kubernetes backend: one batch/v1 Indexed Job whose N pods each run one worker.

With K workers per GPU each pod runs ``launch worker ... --procs K``: K worker processes on
its GPU (see :mod:`psy_agents.backends.slot`). Each launch of an experiment is its own Job:
the first is ``psy-<experiment>``, a later one ``psy-<experiment>-<n>`` (the first free
name from the launch number on), all with the same experiment label.

The manifest is built as a plain dict (:func:`job_manifest`), printed as YAML for
``--dry-run`` and pinned by tests/cli/golden/hpo-k8s*.yaml; ``k8s/base/worker-job.yaml`` is
the same Job as a kustomize template. The storage URL reaches pods only through a
``secretKeyRef``; the launcher never reads or writes its value. The ``kubernetes`` client is
imported lazily and configured from ``kubeconfig``/``$KUBECONFIG``/``~/.kube/config`` or, in a
pod, from the in-cluster service account.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from psy_agents.backends.base import (
    Cancelled,
    Handle,
    LaunchRequest,
    WorkerState,
    parse_index_ranges,
)
from psy_agents.backends.options import K8sOptions
from psy_agents.backends.slot import slot_comment
from psy_agents.errors import USAGE_EXIT, BackendError

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
EXPERIMENT_LABEL = "psy-agents/experiment"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


# Names tried after the launch's own when they exist already (another launcher's Jobs).
NAME_TRIES = 20
MAX_NAME = 52  # pod names append -<index>-<5 random chars> and must stay within 63


def job_name(experiment: str, launch: int = 1) -> str:
    """A DNS-1123 Job name for launch ``launch`` of ``experiment``: ``psy-<experiment>``,
    then ``psy-<experiment>-<launch>`` (pod hostnames append ``-<index>``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"psy-{experiment}".lower()).strip("-")[:MAX_NAME]
    name = name.rstrip("-")
    if name == "psy":
        raise BackendError(f"experiment {experiment!r} gives no usable Kubernetes name",
                           "use letters, digits and dashes in --experiment")
    if launch == 1:
        return name
    suffix = f"-{launch}"
    return name[:MAX_NAME - len(suffix)].rstrip("-") + suffix


def _env(req: LaunchRequest, opts: K8sOptions) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{
        "name": "JOB_COMPLETION_INDEX",
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}},
    }]
    env += [{"name": k, "value": v} for k, v in sorted(req.env.items())]
    # The first secret name is the storage URL under `secret_key`; any further secret
    # variable is read from the same Secret under its own name.
    for i, name in enumerate(req.secret_env_names):
        key = opts.secret_key if i == 0 else name
        env.append({"name": name,
                    "valueFrom": {"secretKeyRef": {"name": opts.secret_name, "key": key}}})
    return env


def _resources(req: LaunchRequest, opts: K8sOptions) -> dict[str, Any]:
    gpus = opts.gpus if opts.gpus is not None else req.gpus_per_worker
    limits: dict[str, Any] = {"memory": opts.memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)  # extended resources belong in limits
    return {"requests": {"cpu": opts.cpu, "memory": opts.memory}, "limits": limits}


def _pod_spec(req: LaunchRequest, opts: K8sOptions) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "worker",
        "image": opts.image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": [*req.slot_command, "--index", "$(JOB_COMPLETION_INDEX)"],
        "env": _env(req, opts),
        "resources": _resources(req, opts),
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    # fsGroup 10001 = the image's non-root user, so it can write the checkpoint volume.
    spec: dict[str, Any] = {"restartPolicy": "Never", "securityContext": {"fsGroup": 10001}}
    if opts.service_account:
        spec["serviceAccountName"] = opts.service_account
    if opts.node_selector:
        spec["nodeSelector"] = dict(sorted(opts.node_selector.items()))
    if opts.tolerations:
        spec["tolerations"] = [dict(t) for t in opts.tolerations]
    spec["containers"] = [container]
    mounts, volumes = _volumes(opts)
    if mounts:
        container["volumeMounts"] = mounts
        spec["volumes"] = volumes
    return spec


def _volumes(opts: K8sOptions) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes): the data PVC read-only at ``data_dir`` (none: the data is
    baked into the image there) and the checkpoint PVC at ``checkpoint_mount``."""
    mounts, volumes = [], []
    if opts.data_pvc:
        mounts.append({"name": "data", "mountPath": opts.data_dir, "readOnly": True})
        volumes.append({"name": "data", "persistentVolumeClaim": {
            "claimName": opts.data_pvc, "readOnly": True}})
    if opts.pvc_name:
        mounts.append({"name": "checkpoints", "mountPath": opts.checkpoint_mount})
        volumes.append({"name": "checkpoints",
                        "persistentVolumeClaim": {"claimName": opts.pvc_name}})
    return mounts, volumes


def job_manifest(req: LaunchRequest, opts: K8sOptions, name: str | None = None
                 ) -> dict[str, Any]:
    """The Job as a dict with a stable key order (golden-file friendly), named ``name``
    (None: :func:`job_name` of the request's launch)."""
    labels = {"app.kubernetes.io/name": "psy-agents", "app.kubernetes.io/component": "worker",
              EXPERIMENT_LABEL: job_name(req.experiment)[4:]}
    if opts.queue_name:
        labels[QUEUE_LABEL] = opts.queue_name
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": req.n_workers,
        "parallelism": req.n_workers,
        "backoffLimitPerIndex": opts.backoff_limit_per_index,
    }
    if opts.max_failed_indexes is not None:
        spec["maxFailedIndexes"] = opts.max_failed_indexes
    spec["ttlSecondsAfterFinished"] = opts.ttl_seconds_after_finished
    # A pod evicted or preempted (drain, spot reclaim, Kueue) does not count as a failure:
    # the worker saved a checkpoint on SIGTERM and a new pod for the index resumes it. A
    # worker that exits 2 met a user error (bad URL, data, study) that a retry repeats: its
    # index fails at once. Any other exit (75 "requeue me", a crash) is retried per index.
    spec["podFailurePolicy"] = {"rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "FailIndex", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                "values": [USAGE_EXIT]}}]}
    spec["template"] = {"metadata": {"labels": dict(labels)}, "spec": _pod_spec(req, opts)}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name or job_name(req.experiment, req.launch),
                         "namespace": opts.namespace,
                         "labels": labels},
            "spec": spec}


class K8sBackend:
    """See the module docstring. ``submit`` returns once the API server stored the Job."""

    name = "k8s"
    options_cls = K8sOptions

    def __init__(self, options: K8sOptions | None = None) -> None:
        self.options = options or K8sOptions()

    def check_available(self) -> None:
        """Raises BackendError when no kube config (file or in-cluster) can be loaded."""
        self._api_client()

    def default_gpus_per_worker(self) -> int:
        """Cluster workers are GPU workers: one GPU each (``--gpus-per-worker 0`` for CPU)."""
        return 1

    def worker_paths(self, data_dir: Path, runs_dir: Path) -> tuple[str, str]:
        """The pod's folders, whatever the launcher's: ``data_dir`` of the profile, and the
        checkpoint volume's mount (the container's own ``runs`` without a volume)."""
        opts = self.options
        return opts.data_dir, opts.checkpoint_mount if opts.pvc_name else "runs"

    def _api_client(self):
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        opts = self.options
        env_path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        path = Path(opts.kubeconfig or env_path or "~/.kube/config").expanduser()
        try:
            if path.is_file():
                return config.new_client_from_config(config_file=str(path), context=opts.context)
            if opts.kubeconfig:
                raise BackendError(f"kubeconfig {path} does not exist", "fix --k8s-kubeconfig")
            if os.environ.get("KUBERNETES_SERVICE_HOST"):
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)
                return client.ApiClient(cfg)
        except ConfigException as exc:
            raise BackendError(f"cannot load Kubernetes config {path}: {exc}",
                               "fix the kubeconfig or pass --k8s-context") from None
        raise BackendError(f"no Kubernetes config: {path} does not exist and this is not a pod",
                           "set KUBECONFIG or pass --k8s-kubeconfig")

    def render(self, req: LaunchRequest) -> str:
        """The Job YAML, after a comment saying what each pod runs when it runs several
        workers."""
        import yaml

        comments = "".join(f"{line}\n" for line in slot_comment(req, "pod"))
        return comments + yaml.safe_dump(job_manifest(req, self.options), sort_keys=False,
                                         default_flow_style=False)

    def _batch(self):
        from kubernetes import client

        return client.BatchV1Api(self._api_client())

    def submit(self, req: LaunchRequest) -> Handle:
        """Create the Job under the first free name from the launch's own
        (:func:`job_name`, up to NAME_TRIES more). Raises BackendError (every name taken:
        409, 403 forbidden, unreachable ...)."""
        ns, batch = self.options.namespace, self._batch()
        last = req.launch + NAME_TRIES
        for number in range(req.launch, last + 1):
            name = job_name(req.experiment, number)
            try:
                with _api_errors(f"create Job {name} in namespace {ns}", req.experiment):
                    batch.create_namespaced_job(namespace=ns,
                                                body=job_manifest(req, self.options, name))
                break
            except _Exists:
                if number == last:
                    raise
        return Handle("k8s", req.experiment, name,
                      {"namespace": ns, "n_workers": req.n_workers,
                       "workers_per_gpu": req.workers_per_gpu,
                       "kubeconfig": self.options.kubeconfig, "context": self.options.context},
                      launch=req.launch)

    def status(self, handle: Handle) -> list[WorkerState]:
        """Per-index states from the Job status (completed/failed indexes) and its pods."""
        from kubernetes import client

        ns = handle.data["namespace"]
        api = self._api_client()
        with _api_errors(f"read Job {handle.job_id} in namespace {ns}", handle.experiment):
            job = client.BatchV1Api(api).read_namespaced_job(handle.job_id, ns)
            pods = client.CoreV1Api(api).list_namespaced_pod(
                ns, label_selector=f"job-name={handle.job_id}").items
        st = job.status
        done = set(parse_index_ranges(getattr(st, "completed_indexes", None) if st else None))
        failed = set(parse_index_ranges(getattr(st, "failed_indexes", None) if st else None))
        phases = {int(p.metadata.annotations.get(INDEX_ANNOTATION, -1)): p.status.phase
                  for p in pods if p.metadata.annotations and p.status}
        out = []
        for i in range(int(handle.data.get("n_workers", job.spec.completions))):
            if i in done:
                out.append(WorkerState(i, "succeeded"))
            elif i in failed:
                out.append(WorkerState(i, "failed"))
            elif phases.get(i) == "Running":
                out.append(WorkerState(i, "running"))
            else:
                out.append(WorkerState(i, "pending", phases.get(i, "no pod yet")))
        return out

    def cancel(self, handle: Handle) -> Cancelled:
        """Delete the Job and (in the background) its pods. Idempotent: a Job already gone
        (404) is reported as ``ended``, not as an error."""
        ns = handle.data["namespace"]
        try:
            with _api_errors(f"delete Job {handle.job_id} in namespace {ns}",
                             handle.experiment):
                self._batch().delete_namespaced_job(handle.job_id, ns,
                                                    propagation_policy="Background")
        except _NotFound:
            return Cancelled(ended=True)
        return Cancelled()


class _NotFound(BackendError):
    pass


class _Exists(BackendError):
    pass


class _api_errors:
    """Map API and connection failures of one call to a one-line BackendError."""

    def __init__(self, what: str, experiment: str) -> None:
        self.what, self.experiment = what, experiment

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if exc is None or isinstance(exc, BackendError):
            return False
        if isinstance(exc, ApiException):
            raise _api_error(exc, self.what, self.experiment) from None
        if isinstance(exc, HTTPError | OSError):
            raise BackendError(f"cannot {self.what}: API server unreachable ({type(exc).__name__})",
                               "check the cluster address in your kubeconfig and the network") from None
        return False


def _api_error(exc, what: str, experiment: str) -> BackendError:
    reason = f"{exc.status} {exc.reason}"
    if exc.status == 409:
        return _Exists(f"cannot {what}: it already exists ({reason})",
                       f"run `launch cancel --experiment {experiment}` or pick another experiment name")
    if exc.status == 403:
        return BackendError(f"cannot {what}: forbidden ({reason})",
                            "ask your cluster admin for RBAC rights on jobs.batch in that namespace")
    if exc.status == 401:
        return BackendError(f"cannot {what}: unauthorized ({reason})",
                            "refresh your cluster credentials (kubeconfig token)")
    if exc.status == 404:
        return _NotFound(f"cannot {what}: not found ({reason})",
                         "check --k8s-namespace and that the namespace exists")
    return BackendError(f"cannot {what}: API error {reason}", "see the API server's message")

