"""k8s backend: schema validation (1.30+), Job rules, `kubectl kustomize` of k8s/, and the
real client against kmock's emulated API server (create, status, cancel, 409, 403, no
kubeconfig). The Job YAML itself is pinned by the goldens of `launch hpo --backend k8s
--dry-run` (tests/cli/test_cli_gpus.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from psy_agents.backends.base import Cancelled, LaunchRequest
from psy_agents.backends.k8s import K8sBackend, job_manifest, job_name
from psy_agents.backends.options import K8sOptions
from psy_agents.backends.registry import load_options, start
from psy_agents.errors import BackendError

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "k8s"
VALIDATE = REPO / ".venv" / "bin" / "kubernetes-validate"
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def _full_options(**kw) -> K8sOptions:
    return K8sOptions(namespace="hpo", image="registry.example/psy-agents:0.1.0",
                      node_selector={"nvidia.com/gpu.product": "A100"},
                      tolerations=({"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"},),
                      queue_name="team-a", max_failed_indexes=2, gpus=1,
                      service_account="psy-worker", **kw)


def _req(n: int = 4, **kw) -> LaunchRequest:
    fields = {"run_dir": Path("runs/paper"), "gpus_per_worker": 1, **kw}
    return LaunchRequest(experiment="Paper_Run.1", n_workers=n,
                         worker_argv=("launch", "worker", "--study", "paper.joint.s1",
                                      "--data-dir", "/data", "--runs-dir", "/checkpoints"),
                         env={"HF_HUB_OFFLINE": "1"}, secret_env_names=("PSY_STORAGE",),
                         **fields)


def test_job_rules_a_schema_cannot_check():
    job = yaml.safe_load(K8sBackend(_full_options()).render(_req(n=5)))
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 5, 5)
    assert pod["restartPolicy"] == "Never"
    assert spec["podFailurePolicy"]["rules"][0] == {
        "action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"][-2:] == ["--index", "$(JOB_COMPLETION_INDEX)"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PSY_STORAGE"] == {"name": "PSY_STORAGE", "valueFrom": {
        "secretKeyRef": {"name": "psy-storage", "key": "url"}}}
    assert "value" not in env["PSY_STORAGE"]
    assert env["HF_HUB_OFFLINE"] == {"name": "HF_HUB_OFFLINE", "value": "1"}
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["metadata"]["name"] == "psy-paper-run-1"


def test_no_password_in_any_rendered_or_shipped_manifest(monkeypatch):
    # The launcher holds the URL both ways: resolved (secret_values, as `launch hpo` passes
    # it) and in its environment; neither value may reach the Job.
    monkeypatch.setenv("PSY_STORAGE", "postgresql+psycopg2://psy:hunter2-env@db/optuna")
    given = {"PSY_STORAGE": "postgresql+psycopg2://psy:hunter2-given@db/optuna"}
    texts = [K8sBackend(_full_options()).render(_req(secret_values=given))]
    texts += [p.read_text() for p in K8S_DIR.rglob("*.yaml")]
    for text in texts:
        assert "hunter2" not in text
        for doc in yaml.safe_load_all(text):
            if doc and doc.get("kind") == "Secret":
                assert all("CHANGE-ME" in v for v in doc["stringData"].values())


def test_cpu_job_has_no_gpu_limit_and_no_volume_without_pvc():
    job = job_manifest(_req(gpus_per_worker=0), K8sOptions(pvc_name=None, data_pvc=None))
    pod = job["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "volumes" not in pod and "volumeMounts" not in pod["containers"][0]


def test_job_name_is_dns_safe_and_bad_names_are_one_line():
    assert job_name("A" * 80).startswith("psy-aaaa") and len(job_name("A" * 80)) <= 52
    with pytest.raises(BackendError, match="gives no usable Kubernetes name"):
        job_name("___")


def _manifest_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S_DIR.rglob("*.yaml")):
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


@pytest.mark.parametrize("version", VERSIONS)
def test_rendered_job_and_k8s_dir_pass_kubernetes_validate_api(version):
    job = job_manifest(_req(), _full_options())
    kubernetes_validate.validate(job, version, strict=True)
    kinds = set()
    for path, doc in _manifest_docs():
        kinds.add(doc["kind"])
        if doc["kind"] == "Kustomization":
            for res in doc["resources"]:  # kustomize, not Kubernetes: check references
                assert (path.parent / res).exists(), f"{path}: missing {res}"
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    assert {"Namespace", "StatefulSet", "Service", "Deployment", "Secret", "Job",
            "PersistentVolumeClaim"} <= kinds


def test_kubernetes_validate_cli_strict_130(tmp_path):
    rendered = tmp_path / "job.yaml"
    rendered.write_text(K8sBackend(_full_options()).render(_req()))
    files = [str(rendered), *(str(p) for p in sorted(K8S_DIR.rglob("*.yaml")))]
    out = subprocess.run([str(VALIDATE), "-k", "1.30.0", "--strict", *files],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    passed = [line for line in out.stdout.splitlines() if " passed " in line]
    assert len(passed) == sum(1 for _, d in _manifest_docs() if d["kind"] != "Kustomization") + 1


TEMPLATE_REQUEST = LaunchRequest(
    experiment="example", n_workers=4,
    worker_argv=("launch", "worker", "--study", "example.criteria.s1",
                 "--data-dir", "/data", "--runs-dir", "/checkpoints"),
    run_dir=Path("runs/example"), secret_env_names=("PSY_STORAGE",), gpus_per_worker=1)


def test_kustomize_worker_template_agrees_with_the_rendered_job():
    opts = load_options("k8s", profile=REPO / "launch" / "k8s.toml")
    (template,) = [d for p, d in _manifest_docs() if p.name == "worker-job.yaml"]
    assert template == job_manifest(TEMPLATE_REQUEST, opts)


@pytest.fixture
def kubectl() -> str:
    """kubectl's path. Under CI (`.ci/services-up.sh` installs Debian's kubernetes-client)
    a missing kubectl fails the test; elsewhere it skips."""
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but `kubectl` is missing: run .ci/services-up.sh first "
                        "(it installs Debian's kubernetes-client)")
        pytest.skip("`kubectl` not found: run .ci/services-up.sh (with CI set this fails)")
    return path


@pytest.mark.parametrize("version", VERSIONS)
def test_kustomize_builds_base_and_worker_into_valid_namespaced_objects(kubectl, version):
    """`kubectl kustomize` (its built-in kustomize; it needs no API server) builds both
    kustomizations; every object it emits passes strict schema validation, sits in the
    psy-agents namespace, and the base's objects carry the part-of label. k8s/ uses only
    fields that kubectl 1.20's kustomize v2.0.3 (Debian's) and current ones both know."""
    built = {}
    for name in ("base", "worker"):
        out = subprocess.run([kubectl, "kustomize", str(K8S_DIR / name)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        built[name] = [d for d in yaml.safe_load_all(out.stdout) if d]
    listed = {(d["kind"], d["metadata"]["name"]) for p, d in _manifest_docs()
              if p.parent.name == "base" and d["kind"] not in ("Kustomization", "Secret")}
    assert {(d["kind"], d["metadata"]["name"]) for d in built["base"]} == listed
    for doc in built["base"] + built["worker"]:
        kubernetes_validate.validate(doc, version, strict=True)
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == "psy-agents"
        else:
            assert doc["metadata"]["namespace"] == "psy-agents", doc["metadata"]
    assert {d["kind"] for d in built["base"]} >= {"Namespace", "StatefulSet", "Service",
                                                  "Deployment", "PersistentVolumeClaim"}
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "psy-agents"
               for d in built["base"])
    (job,) = built["worker"]
    (template,) = [d for p, d in _manifest_docs() if p.name == "worker-job.yaml"]
    assert job["kind"] == "Job" and job["spec"] == template["spec"]


def test_submit_status_cancel_against_emulated_api(kube, tmp_path):
    emulator, kubeconfig = kube
    backend = K8sBackend(K8sOptions(kubeconfig=str(kubeconfig)))
    req = _req(n=3, run_dir=tmp_path / "runs/paper")
    handle = start(backend, req)
    assert (handle.job_id, handle.data["namespace"]) == ("psy-paper-run-1", "psy-agents")
    from kubernetes import client

    api = client.BatchV1Api(backend._api_client())
    stored = api.read_namespaced_job("psy-paper-run-1", "psy-agents")
    assert (stored.spec.completions, stored.spec.completion_mode) == (3, "Indexed")
    assert [s.state for s in backend.status(handle)] == ["pending"] * 3
    # The emulator runs no controller: set the status a Job controller would write.
    api.patch_namespaced_job_status("psy-paper-run-1", "psy-agents",
                                    {"status": {"completedIndexes": "0,2", "failedIndexes": "1"}})
    assert [s.state for s in backend.status(handle)] == ["succeeded", "failed", "succeeded"]
    assert backend.cancel(handle) == Cancelled()
    assert api.list_namespaced_job("psy-agents").items == []
    assert backend.cancel(handle) == Cancelled(ended=True)  # idempotent: the Job is gone


def test_a_second_submit_takes_the_next_name_and_409_only_when_every_name_is_taken(
        kube, tmp_path):
    emulator, kubeconfig = kube
    backend = K8sBackend(K8sOptions(kubeconfig=str(kubeconfig)))
    backend.submit(_req())
    assert backend.submit(_req()).job_id == "psy-paper-run-1-2"
    emulator.emu["post /apis/batch/v1/namespaces/psy-agents/jobs"] << 409
    with pytest.raises(BackendError) as err:
        backend.submit(_req())
    assert err.value.format_message() == (
        "cannot create Job psy-paper-run-1-21 in namespace psy-agents: it already exists "
        "(409 Conflict) — run `launch cancel --experiment Paper_Run.1` or pick another "
        "experiment name")


def test_forbidden_is_a_one_line_403_error(kube):
    emulator, kubeconfig = kube
    emulator.emu["post /apis/batch/v1/namespaces/locked/jobs"] << 403
    backend = K8sBackend(K8sOptions(kubeconfig=str(kubeconfig), namespace="locked"))
    with pytest.raises(BackendError) as err:
        backend.submit(_req())
    assert err.value.format_message() == (
        "cannot create Job psy-paper-run-1 in namespace locked: forbidden (403 Forbidden) — "
        "ask your cluster admin for RBAC rights on jobs.batch in that namespace")


def test_no_kubeconfig_fails_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    req = _req(run_dir=tmp_path / "runs/paper")
    with pytest.raises(BackendError) as err:
        start(K8sBackend(), req)
    assert err.value.format_message() == (
        f"no Kubernetes config: {tmp_path}/.kube/config does not exist and this is not a pod "
        "— set KUBECONFIG or pass --k8s-kubeconfig")
    assert not (tmp_path / "runs").exists()
    missing = K8sBackend(K8sOptions(kubeconfig=str(tmp_path / "nope")))
    with pytest.raises(BackendError, match="kubeconfig .*nope does not exist"):
        missing.check_available()


def test_unreachable_api_server_is_one_line(tmp_path):
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": "c", "context": {"cluster": "x", "user": "u"}}]}
    (tmp_path / "kc").write_text(yaml.safe_dump(cfg))
    backend = K8sBackend(K8sOptions(kubeconfig=str(tmp_path / "kc")))
    with pytest.raises(BackendError, match="API server unreachable"):
        backend.submit(_req())


def test_data_comes_from_a_read_only_volume_or_the_image():
    pod = job_manifest(_req(), K8sOptions(data_pvc="redsm5", data_dir="/mnt/redsm5"))[
        "spec"]["template"]["spec"]
    assert pod["containers"][0]["volumeMounts"][0] == {
        "name": "data", "mountPath": "/mnt/redsm5", "readOnly": True}
    assert pod["volumes"][0] == {"name": "data", "persistentVolumeClaim": {
        "claimName": "redsm5", "readOnly": True}}
    baked = job_manifest(_req(), K8sOptions(data_pvc=None, pvc_name=None))["spec"]["template"]
    assert "volumes" not in baked["spec"] and "volumeMounts" not in baked["spec"]["containers"][0]


def test_two_workers_per_gpu_run_in_each_pod_and_the_yaml_says_so():
    text = K8sBackend(_full_options()).render(_req(workers_per_gpu=2))
    assert text.splitlines()[0] == ("# each pod I runs 2 worker processes, indices 2*I to "
                                    "2*I+1 (`--procs 2`), each with 1/2 of the GPU's memory")
    job = yaml.safe_load(text)
    kubernetes_validate.validate(job, "1.30.0", strict=True)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-4:] == ["--procs", "2", "--index", "$(JOB_COMPLETION_INDEX)"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"  # one GPU, shared
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4  # pods, not processes
    one = yaml.safe_load(K8sBackend(_full_options()).render(_req()))
    assert {**job, "spec": one["spec"]} == one  # only the pod command differs


def test_an_exit_2_fails_its_index_and_anything_else_is_retried():
    rules = job_manifest(_req(), K8sOptions())["spec"]["podFailurePolicy"]["rules"]
    assert rules[1] == {"action": "FailIndex", "onExitCodes": {
        "containerName": "worker", "operator": "In", "values": [2]}}
    assert len(rules) == 2  # exit 75 (requeue me) and crashes count against the per-index backoff
