"""The rendered Kubernetes Job, run as real containers: the worker image, podman, PostgreSQL.

No kube-apiserver or kubelet can run here (INFRA.md), so this harness plays both: it takes
the Job exactly as `launch hpo --backend k8s --dry-run` prints it and starts one container
per completion index with the Job's command, its env (the Secret's key as env, the index
from the downward API), the Job's volumes bound to host folders at the Job's mount paths
(read-only where the Job says so), the image's non-root user, host networking to the real
PostgreSQL, and a read-only root filesystem, so a worker can write only to its volumes (and
/tmp). Index restarts follow the Job: exit 0 ends an index, an exit code named by a
`FailIndex` rule fails it, anything else is retried up to `backoffLimitPerIndex`.

The image is built from containers/Dockerfile on a Debian base made here (the CUDA base stays
the Dockerfile's default), with this machine's CPU torch wheel; layers are cached between
runs, and a source change rebuilds the last layer (~4 min on the 2-core box).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig
from tests.cli.test_cli_answers import K8S_STORAGE
from tests.cli.test_cli_hpo import REPO, launch

IMAGE = "localhost/psy-agents:test"
BASE = "localhost/debian-base:bookworm"
WHEELS = Path("/opt/wheels")
pytestmark = [pytest.mark.containers, pytest.mark.postgres, pytest.mark.slow]


def _podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                          check=check)


@pytest.fixture(scope="session")
def worker_image() -> str:
    """The worker image, built from containers/Dockerfile with this checkout's code."""
    if shutil.which("podman") is None or _podman("image", "exists", BASE, check=False).returncode:
        pytest.fail("podman or the Debian base image is missing: run .ci/containers-up.sh")
    wheels = sorted(WHEELS.glob("torch-*cp311*.whl"))
    torch_spec = f"/opt/wheels/{wheels[-1].name}" if wheels else "torch"
    out = _podman("build", "--format", "docker", "--network", "host",
                  "-f", str(REPO / "containers" / "Dockerfile"),
                  "-t", IMAGE, "--build-arg", f"BASE_IMAGE={BASE}",
                  "--build-arg", f"TORCH_SPEC={torch_spec}",
                  "-v", f"{WHEELS}:/opt/wheels:ro",
                  "-v", "/etc/ssl/certs/ca-certificates.crt:/host-ca.crt:ro",
                  "--env", "PIP_CERT=/host-ca.crt", str(REPO), timeout=1800, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return IMAGE


class JobHarness:
    """Runs the pods of one rendered Job as containers; see the module docstring."""

    def __init__(self, job: dict, volumes: dict[str, Path], secrets: dict[tuple[str, str], str],
                 extra_env: dict[str, str] | None = None) -> None:
        self.job, self.volumes, self.secrets = job, volumes, secrets
        self.extra_env = extra_env or {}
        spec = job["spec"]
        self.backoff = spec["backoffLimitPerIndex"]
        self.fail_codes = {code for rule in spec["podFailurePolicy"]["rules"]
                           if rule["action"] == "FailIndex"
                           for code in rule["onExitCodes"]["values"]}
        self.exits: dict[int, list[int]] = {i: [] for i in range(spec["completions"])}

    def name(self, index: int) -> str:
        return f"{self.job['metadata']['name']}-{index}"

    def argv(self, index: int) -> list[str]:
        pod = self.job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        claims = {v["name"]: v["persistentVolumeClaim"] for v in pod.get("volumes", [])}
        flags = ["--rm", "--name", self.name(index), "--network", "host", "--read-only"]
        for env in container["env"]:
            source = env.get("valueFrom", {})
            if "fieldRef" in source:  # the completion index, from the pod's annotation
                # the one downward-API path the Job controller fills, spelled as it does
                assert source["fieldRef"]["fieldPath"] == (
                    "metadata.annotations['batch.kubernetes.io/job-completion-index']"), source
                value = str(index)
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = self.secrets[(ref["name"], ref["key"])]
            else:
                value = env["value"]
            flags += ["-e", f"{env['name']}={value}"]
        for key, value in self.extra_env.items():
            flags += ["-e", f"{key}={value}"]
        for mount in container.get("volumeMounts", []):
            claim = claims[mount["name"]]
            ro = mount.get("readOnly") or claim.get("readOnly")
            host = self.volumes[claim["claimName"]]
            flags += ["-v", f"{host}:{mount['mountPath']}{':ro' if ro else ''}"]
        command = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in container["command"]]
        return ["podman", "run", *flags, "--entrypoint", command[0], container["image"],
                *command[1:]]

    def start(self, index: int, log: Path) -> subprocess.Popen:
        with open(log, "a") as fh:
            return subprocess.Popen(self.argv(index), stdout=fh, stderr=subprocess.STDOUT)

    def run(self, logs: Path, timeout_s: float = 600, on_tick=None) -> dict[int, str]:
        """Run every index to its end as the Job controller would; returns index -> state."""
        logs.mkdir(parents=True, exist_ok=True)
        procs = {i: self.start(i, logs / f"pod-{i}.log") for i in self.exits}
        states: dict[int, str] = {}
        deadline = time.monotonic() + timeout_s
        while procs:
            assert time.monotonic() < deadline, f"pods still running: {sorted(procs)}"
            if on_tick is not None:
                on_tick(self)
            for index, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                self.exits[index].append(code)
                del procs[index]
                if code == 0:
                    states[index] = "succeeded"
                elif code in self.fail_codes or len(self.exits[index]) > self.backoff:
                    states[index] = "failed"
                else:  # a new pod for the index, as backoffLimitPerIndex allows
                    procs[index] = self.start(index, logs / f"pod-{index}.log")
            time.sleep(0.5)
        return states


def _render(tmp_path: Path, experiment: str, workers: int, *flags: str) -> dict:
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--workers", str(workers),
                  "--backend", "k8s", "--experiment", experiment, "--gpus-per-worker", "0",
                  "--k8s-image", IMAGE, "--k8s-image-pull-policy", "Never", *flags,
                  "--dry-run"], cwd=tmp_path, env={"PSY_LAUNCH_DIR": str(REPO / "launch"),
                                                   "PSY_STORAGE": K8S_STORAGE})
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def _volumes(tmp_path: Path, sample_dir: Path) -> dict[str, Path]:
    data, checkpoints = tmp_path / "volumes" / "data", tmp_path / "volumes" / "checkpoints"
    shutil.copytree(sample_dir, data, ignore=shutil.ignore_patterns("splits-*.json"))
    checkpoints.mkdir(parents=True)
    checkpoints.chmod(0o777)  # what fsGroup 10001 gives the image's user on a real PVC
    return {"psy-data": data, "psy-checkpoints": checkpoints}


def _trials(url: str, study: str):
    return optuna.load_study(study_name=study, storage=open_storage(url)).get_trials()


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.log")))


FAST_TRAIN = {"max_length": 128, "stride": 32, "batch_size": 16, "cls_neg_fraction": 0.5,
              "pooling": "mean", "lr": 1e-3, "warmup_ratio": 0.05}


def test_two_pods_finish_a_training_campaign_from_the_data_volume(
        worker_image, tmp_path, pg_url, sample_dir):
    stage = StageConfig(name="s1", trials=2, epochs=1, patience=1, pruner="none",
                        train_fraction=0.25)
    create_campaign(pg_url, experiment="pods", agents=["criteria"], stages=(stage,),
                    n_workers=2, overrides=CampaignOverrides(train=FAST_TRAIN),
                    data_dir=sample_dir)
    job = _render(tmp_path, "pods", 2)
    volumes = _volumes(tmp_path, sample_dir)
    data_before = sorted(p.name for p in volumes["psy-data"].iterdir())
    # Two pods share this 2-core box: one thread each (a real node gives each its CPUs).
    harness = JobHarness(job, volumes, {("psy-storage", "url"): pg_url},
                         extra_env={"OMP_NUM_THREADS": "1"})
    states = harness.run(tmp_path / "logs", timeout_s=900)
    assert states == {0: "succeeded", 1: "succeeded"}, _logs(tmp_path)
    trials = _trials(pg_url, "pods.criteria.s1")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2, _logs(tmp_path)
    assert {t.user_attrs["worker_index"] for t in trials} <= {0, 1}
    # The data volume is read only: nothing was added to it; the split went to the
    # checkpoint volume, as did the tiny model and the two trials' kept best models (their
    # resume checkpoints are deleted once the trials are COMPLETE).
    ckpt = volumes["psy-checkpoints"]
    assert sorted(p.name for p in volumes["psy-data"].iterdir()) == data_before
    assert list((ckpt / "splits").glob("*-splits-13.json")), _logs(tmp_path)
    assert list((ckpt / "cache").glob("tiny-*/config.json"))
    kept = sorted((ckpt / "pods" / "models" / "pods.criteria.s1").glob("trial-*/heads.pt"))
    assert len(kept) == 2, _logs(tmp_path)
    assert not list((ckpt / "pods" / "checkpoints").rglob("checkpoint.pt"))


SIM = {"objective": "simulated", "sim": {"epoch_s": 1.0, "seed": 2}}


@pytest.mark.parametrize("signal", ["KILL", "TERM"])
def test_a_killed_pod_is_started_again_and_resumes_its_trial_from_the_volume(
        worker_image, tmp_path, pg_url, sample_dir, signal):
    """SIGKILL (a crash, OOM kill): the new pod finds the trial stale after the grace period
    and retries it; SIGTERM (eviction): the worker exits 75 and re-queues it at once."""
    stage = StageConfig(name="s1", trials=1, epochs=6, patience=6, pruner="none")
    create_campaign(pg_url, experiment="kill", agents=["criteria"], stages=(stage,),
                    n_workers=1, overrides=CampaignOverrides(**SIM))
    job = _render(tmp_path, "kill", 1)
    volumes = _volumes(tmp_path, sample_dir)
    saved = volumes["psy-checkpoints"] / "kill" / "checkpoints" / "kill.criteria.s1"
    killed: list[str] = []

    def kill_after_two_epochs(h: JobHarness) -> None:
        files = list(saved.glob("trial-*/simulated.json"))
        if not killed and files and '"epoch": 1' in files[0].read_text():
            killed.append(_podman("kill", "--signal", signal, h.name(0), check=False).stderr)

    harness = JobHarness(job, volumes, {("psy-storage", "url"): pg_url},
                         extra_env={"PSY_HEARTBEAT_INTERVAL_S": "1", "PSY_GRACE_PERIOD_S": "3"})
    states = harness.run(tmp_path / "logs", timeout_s=300, on_tick=kill_after_two_epochs)
    assert killed == [""], killed
    assert states == {0: "succeeded"}, _logs(tmp_path)
    first_exit = harness.exits[0][0]
    assert first_exit == (75 if signal == "TERM" else 137), harness.exits
    # The killed trial #0 is retried by a later trial that resumes from its checkpoint (a
    # new pod may also start a fresh trial before #0 looks stale: budgets count finished
    # trials, and a retry always runs).
    retries = [t for t in _trials(pg_url, "kill.criteria.s1") if t.number > 0
               and t.user_attrs.get("original_trial") == 0 and t.state == TrialState.COMPLETE]
    assert len(retries) == 1, _logs(tmp_path)
    assert retries[0].user_attrs["resumed_from_epoch"] >= 1, _logs(tmp_path)
    assert retries[0].user_attrs["epochs_run"] <= 6 - 2  # the saved epochs were not run again


def test_a_pod_that_exits_2_is_not_started_again(worker_image, tmp_path, pg_url, sample_dir):
    stage = StageConfig(name="s1", trials=1, epochs=1, patience=1, pruner="none")
    create_campaign(pg_url, experiment="other", agents=["criteria"], stages=(stage,),
                    n_workers=1, overrides=CampaignOverrides(**SIM))
    job = _render(tmp_path, "nostudy", 1)  # a study the storage does not hold: a user error
    harness = JobHarness(job, _volumes(tmp_path, sample_dir), {("psy-storage", "url"): pg_url})
    states = harness.run(tmp_path / "logs", timeout_s=120)
    assert states == {0: "failed"} and harness.exits == {0: [2]}, _logs(tmp_path)
    assert "error: no study named 'nostudy.criteria.s1'" in _logs(tmp_path)


def test_the_image_runs_its_worker_as_the_non_root_user(worker_image):
    out = _podman("run", "--rm", "--entrypoint", "id", worker_image, "-u")
    assert out.stdout.strip() == "10001"
    assert os.path.basename(_podman("run", "--rm", "--entrypoint", "sh", worker_image, "-c",
                                    "command -v launch").stdout.strip()) == "launch"
