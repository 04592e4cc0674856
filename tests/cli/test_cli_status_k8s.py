"""`launch hpo --backend k8s` -> `launch status` -> `launch cancel`, through the real CLI
and the real `kubernetes` client against kmock's emulated API server (no controller runs
there, so the test writes the pod and Job status a cluster would)."""

from __future__ import annotations

import pytest

from tests.backends.helpers import KubeEmulator
from tests.cli.test_cli_hpo import launch

NS = "psy-agents"
JOB = "psy-kx"


@pytest.fixture
def kubeconfig(tmp_path):
    with KubeEmulator() as emulator:
        yield emulator.kubeconfig(tmp_path / "kubeconfig")


def _apis(kubeconfig):
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    return client.BatchV1Api(api), client.CoreV1Api(api)


def _running_pod(core, index: int) -> None:
    """The pod of ``index`` as the Job controller and kubelet would leave it: Running.
    Label and annotation are spelled as the cluster writes them, not imported."""
    name = f"{JOB}-{index}-abcde"
    core.create_namespaced_pod(NS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"job-name": JOB},
                     "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
        "spec": {"containers": [{"name": "worker", "image": "psy-agents:latest"}]}})
    core.patch_namespaced_pod_status(name, NS, {"status": {"phase": "Running"}})


@pytest.mark.postgres
def test_status_reads_the_job_back_and_cancel_deletes_it(tmp_path, kubeconfig, pg_url):
    db = pg_url  # the database the pods would reach (a launcher-local SQLite is refused)
    runs = str(tmp_path / "runs")
    common = ["--experiment", "kx", "--runs-dir", runs]
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
                  "--trials", "2", "--workers", "3", "--backend", "k8s", "--k8s-kubeconfig",
                  str(kubeconfig), "--storage", db, *common], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"submitted k8s job {JOB}" in out.stderr
    batch, core = _apis(kubeconfig)
    assert batch.read_namespaced_job(JOB, NS).spec.completions == 3

    def status() -> list[str]:
        res = launch(["status", "--storage", db, *common], cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        return res.stdout.splitlines()

    lines = status()
    assert lines[0].startswith("kx.criteria.s1  [....................] 0/2  complete=0")
    assert lines[1:] == [f"workers: k8s job {JOB} — pending 0-2"]
    _running_pod(core, 1)
    batch.patch_namespaced_job_status(JOB, NS, {"status": {"completedIndexes": "0",
                                                           "failedIndexes": "2"}})
    assert status()[1:] == [f"workers: k8s job {JOB} — running 1; succeeded 0; failed 2"]

    out = launch(["cancel", *common], cwd=tmp_path)
    assert (out.returncode, out.stdout) == (0, f"cancelled the k8s workers of kx (job {JOB})\n")
    assert batch.list_namespaced_job(NS).items == []
    # The study lines stay; the workers line says the Job cannot be read any more.
    after = status()
    assert after[0].startswith("kx.criteria.s1  [") and len(after) == 2
    assert after[1].startswith(f"workers: unknown — cannot read Job {JOB} in namespace {NS}")
    out = launch(["cancel", *common], cwd=tmp_path)  # idempotent
    assert (out.returncode, out.stdout) == (
        0, f"nothing to cancel: the k8s workers of kx (job {JOB}) have exited\n"), out.stderr


def test_status_without_a_recorded_handle_prints_only_the_studies(tmp_path):
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    out = launch(["hpo", "--agent", "share", "--stage", "s0", "--objective", "simulated",
                  "--trials", "1", "--storage", db, "--experiment", "loc",
                  "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    res = launch(["status", "--storage", db, "--experiment", "loc", "--runs-dir",
                  str(tmp_path / "elsewhere")], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 1 and "workers:" not in res.stdout
    res = launch(["status", "--storage", db, "--experiment", "loc", "--runs-dir",
                  str(tmp_path / "runs")], cwd=tmp_path)
    assert res.stdout.splitlines()[1:] == [f"workers: local job {_pid(tmp_path)} — succeeded 0"]


def _pid(tmp_path) -> str:
    import json

    return json.loads((tmp_path / "runs" / "loc" / "backend.json").read_text())["job_id"]
