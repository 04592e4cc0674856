"""Adding workers to a running experiment: every launch is recorded and named apart.

The handle file keeps each launch (old one-handle files still read as launch 1); a second
local launch logs apart from the first; a second k8s Job gets its own name (the kmock API
server); `launch cancel` stops every launch and `launch status` shows a line per launch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from psy_agents.backends.base import (
    Cancelled,
    Handle,
    LaunchRequest,
    forget_launch,
    load_handle,
    load_handles,
    next_launch,
    reserve_launch,
    save_handle,
)
from psy_agents.backends.k8s import K8sBackend, job_name
from psy_agents.backends.options import K8sOptions
from psy_agents.backends.registry import cancel_experiment, launch_states, start
from psy_agents.errors import BackendError
from tests.backends.helpers import pid_alive, records, standin_argv, wait_until
from tests.backends.test_backend_slurm import slurm_cluster  # noqa: F401 - fixture


def test_an_old_single_handle_file_reads_as_launch_1_and_keeps_its_place(tmp_path):
    old = {"backend": "slurm", "experiment": "e", "job_id": "41",
           "data": {"folder": "/f/%j", "n_workers": 2}}
    (tmp_path / "backend.json").write_text(json.dumps(old))
    assert load_handles(tmp_path) == [Handle("slurm", "e", "41", old["data"], launch=1)]
    assert next_launch(tmp_path) == 2
    save_handle(tmp_path, Handle("k8s", "e", "psy-e-2", {"namespace": "n"}, launch=2))
    assert [(h.backend, h.job_id, h.launch) for h in load_handles(tmp_path)] == \
        [("slurm", "41", 1), ("k8s", "psy-e-2", 2)]


def test_the_file_keeps_every_launch_with_the_latest_in_the_old_format(tmp_path):
    first = Handle("local", "e", "100", {"workers": []}, launch=1)
    save_handle(tmp_path, first)
    save_handle(tmp_path, Handle("slurm", "e", "41", {"n_workers": 4}, launch=2))
    save_handle(tmp_path, Handle("local", "e", "100", {"workers": [{"index": 0}]}, launch=1))
    raw = json.loads((tmp_path / "backend.json").read_text())
    # Readers of the one-handle format see the latest launch; earlier ones are kept below.
    assert (raw["backend"], raw["job_id"], raw["launch"]) == ("slurm", "41", 2)
    assert raw["earlier"] == [{"backend": "local", "experiment": "e", "job_id": "100",
                               "launch": 1, "data": {"workers": [{"index": 0}]}}]
    assert load_handle(tmp_path).job_id == "41"


def test_launchers_starting_at_once_get_different_numbers(tmp_path):
    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(reserve_launch(tmp_path, "local",
                                                                         "e")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 9))
    assert [h.submitted for h in load_handles(tmp_path)] == [False] * 8
    for n in range(1, 9):
        forget_launch(tmp_path, n)
    assert not tmp_path.exists()  # a failed first launch leaves nothing behind


def test_a_failed_submission_leaves_no_record(tmp_path):
    class Refused:
        name = "local"

        def check_available(self) -> None:
            pass

        def submit(self, req):
            raise BackendError("sbatch refused the job array", "check the partition")

    save_handle(tmp_path / "e", Handle("local", "e", "100", launch=1))
    req = LaunchRequest("e", 1, ("x",), run_dir=tmp_path / "e")
    with pytest.raises(BackendError):
        start(Refused(), req)
    assert [h.launch for h in load_handles(tmp_path / "e")] == [1]


LAUNCHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from psy_agents.backends.base import LaunchRequest
    from psy_agents.backends.local import LocalBackend
    from psy_agents.backends.options import LocalOptions
    from psy_agents.backends.registry import start
    req = LaunchRequest(experiment="e1", n_workers=1, worker_argv=tuple(sys.argv[2:]),
                        run_dir=Path(sys.argv[1]))
    try:
        start(LocalBackend(LocalOptions(restart_delay_s=0, stop_grace_s=10)), req)
    except KeyboardInterrupt:
        sys.exit(130)
""")


def test_two_local_launches_of_one_experiment_log_apart_and_cancel_stops_both(tmp_path,
                                                                               monkeypatch):
    from psy_agents.cli.main import cli
    from psy_agents.cli.status import workers_line

    run_dir = tmp_path / "runs" / "e1"
    recs = [tmp_path / "rec-a", tmp_path / "rec-b"]
    procs = []
    try:
        for rec in recs:  # the second starts while the first still runs
            rec.mkdir()
            procs.append(subprocess.Popen([sys.executable, "-c", LAUNCHER, str(run_dir),
                                           *standin_argv(rec, "sleep")]))
            wait_until(lambda rec=rec: records(rec, 0), 30, "the launch's worker to start")
        wait_until(lambda: len([h for h in load_handles(run_dir) if h.submitted]) == 2, 10,
                   "both launches to be recorded")
        logs = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.log"))
        assert logs == ["logs/launch-2/worker-0.log", "logs/worker-0.log"]
        first, second = load_handles(run_dir)
        assert (first.launch, second.launch) == (1, 2)
        assert [first.job_id, second.job_id] == [str(p.pid) for p in procs]
        assert workers_line(run_dir).splitlines() == [
            f"workers: local job {procs[0].pid} — running 0",
            f"workers: local job {procs[1].pid} (launch 2) — running 0"]
        monkeypatch.setenv("PSY_LAUNCH_DIR", str(tmp_path / "no-profiles"))
        out = CliRunner().invoke(cli, ["cancel", "--experiment", "e1",
                                       "--runs-dir", str(tmp_path / "runs")])
        assert out.exit_code == 0, out.output
        assert out.output.splitlines() == [
            "cancelled 1 local worker(s) of e1 (launch 1)",
            "cancelled 1 local worker(s) of e1 (launch 2)"]
        assert [p.wait(timeout=60) for p in procs] == [130, 130]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [pid_alive(records(rec, 0)[0]["pid"]) for rec in recs] == [False, False]
    assert [w["state"] for h in load_handles(run_dir) for w in h.data["workers"]] == \
        ["stopped", "stopped"]


def _k8s_req(tmp_path: Path, experiment: str = "Paper_Run.1") -> LaunchRequest:
    return LaunchRequest(experiment=experiment, n_workers=2,
                         worker_argv=("launch", "worker", "--study", "paper.joint.s1"),
                         run_dir=tmp_path / "runs" / "paper", gpus_per_worker=1,
                         secret_env_names=("PSY_STORAGE",))


def test_each_k8s_launch_is_its_own_job_and_cancel_deletes_every_one(kube, tmp_path):
    _, kubeconfig = kube
    backend = K8sBackend(K8sOptions(kubeconfig=str(kubeconfig)))
    req = _k8s_req(tmp_path)
    from kubernetes import client

    api = client.BatchV1Api(backend._api_client())
    # Another launcher (another machine, its own runs dir) made the name launch 3 would get.
    taken = yaml.safe_load(backend.render(_k8s_req(tmp_path)))
    taken["metadata"]["name"] = "psy-paper-run-1-3"
    api.create_namespaced_job("psy-agents", taken)
    names = [start(backend, req).job_id for _ in range(3)]
    assert names == ["psy-paper-run-1", "psy-paper-run-1-2", "psy-paper-run-1-4"]
    jobs = {j.metadata.name: j for j in api.list_namespaced_job("psy-agents").items}
    assert {jobs[n].metadata.labels["psy-agents/experiment"] for n in names} == {"paper-run-1"}
    assert [(h.launch, h.job_id) for h in load_handles(req.run_dir)] == \
        [(1, names[0]), (2, names[1]), (3, names[2])]
    api.patch_namespaced_job_status(names[1], "psy-agents",
                                    {"status": {"completedIndexes": "0-1"}})
    states = [[s.state for s in st] for _, st in launch_states(req.run_dir)]
    assert states == [["pending", "pending"], ["succeeded", "succeeded"],
                      ["pending", "pending"]]
    assert [(h.job_id, done) for h, done in cancel_experiment(req.run_dir)] == \
        [(n, Cancelled()) for n in names]
    assert [j.metadata.name for j in api.list_namespaced_job("psy-agents").items] == \
        ["psy-paper-run-1-3"]  # not ours: left alone
    assert [done for _, done in cancel_experiment(req.run_dir)] == \
        [Cancelled(ended=True)] * 3  # idempotent, and says the Jobs are gone


def test_later_job_names_stay_dns_safe_and_short():
    for launch in (2, 17, 123):
        name = job_name("A" * 80, launch)
        assert len(name) <= 52 and name.endswith(f"-{launch}") and "--" not in name
    assert job_name("x-", 2) == "psy-x-2"
    assert job_name("Paper_Run.1") == "psy-paper-run-1"  # the first launch is unchanged


@pytest.mark.slurm
def test_two_slurm_launches_are_both_recorded_and_cancelled(tmp_path, monkeypatch,
                                                            slurm_cluster):  # noqa: F811
    from psy_agents.backends.options import SlurmOptions
    from psy_agents.backends.slurm import SlurmBackend

    monkeypatch.setenv("PSY_STORAGE", "postgresql+psycopg2://u:pw@db/optuna")
    rec = tmp_path / "rec"
    rec.mkdir()
    backend = SlurmBackend(SlurmOptions(time_min=10, cpus_per_task=1))
    req = LaunchRequest("sl", 1, standin_argv(rec, "sleep"), run_dir=tmp_path / "runs" / "sl",
                        secret_env_names=("PSY_STORAGE",))
    handles = [start(backend, req) for _ in range(2)]
    try:
        assert [h.launch for h in handles] == [1, 2]
        assert len({h.job_id for h in handles}) == 2  # two arrays, each with its own id
        assert load_handles(req.run_dir) == handles
        wait_until(lambda: [[s.state for s in st] for _, st in launch_states(req.run_dir)]
                   == [["running"], ["running"]], 60, "sacct to report both launches running",
                   step=0.5)
        assert [h for h, _ in cancel_experiment(req.run_dir)] == handles
        wait_until(lambda: [[s.state for s in st] for _, st in launch_states(req.run_dir)]
                   == [["stopped"], ["stopped"]], 60, "both launches to be stopped", step=0.5)
    finally:
        for handle in handles:
            backend.cancel(handle)
