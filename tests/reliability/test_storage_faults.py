"""Storage and tracking faults, end to end through `launch`.

- a storage URL to a closed port: `launch hpo` and `launch worker` end with one line and
  exit 2 (well within 10 s: the connect is refused), and create nothing;
- the database disappears for ~20 s mid-campaign (the private server is stopped, then
  started again): workers wait and retry with backoff, and the budget completes;
- the MLflow server is unreachable: every trial still completes.
"""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.storage import open_storage
from tests.backends.helpers import wait_until
from tests.reliability.conftest import free_port
from tests.reliability.helpers import campaign_under_fault, run_launch, worker_pids

pytestmark = pytest.mark.postgres
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PASSWORD = "cl0sed-P0rt-pw"


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("command", [
    ["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
     "--trials", "2", "--workers", "2"],
    ["worker", "--study", "e.criteria.s1", "--index", "0"],
])
def test_closed_port_is_one_line_exit_2_and_creates_nothing(tmp_path, command):
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nothing"
    before = _listing(tmp_path)
    started = time.monotonic()
    out = run_launch([*command, "--storage", url], cwd=tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot use storage postgresql+psycopg2://postgres:***@127.0.0.1:{url.split(':')[3]}")
    assert "Connection refused" in lines[0] and lines[0].endswith(
        "— check the URL (--storage or PSY_STORAGE) and that the database is up")
    assert PASSWORD not in out.stdout + out.stderr
    assert _listing(tmp_path) == before
    assert elapsed < 10  # a behaviour bound (refused, not hanging), not a benchmark


def _finished(url, name):
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    return study.get_trials()


@pytest.mark.slow
def test_database_lost_mid_run_workers_wait_and_finish_the_budget(private_pg, tmp_path):
    url = private_pg.new_database()
    run_dir = tmp_path / "runs" / "outage"
    args = ["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
            "--trials", "40", "--epochs", "4", "--workers", "2", "--experiment", "outage",
            "--storage", url]

    def outage(launcher) -> None:
        wait_until(lambda: len(worker_pids(run_dir)) == 2, 60, "2 running workers")
        wait_until(lambda: sum(t.state in FINISHED for t in
                               _finished(url, "outage.criteria.s1")) >= 3, 60, "3 finished trials")
        private_pg.stop()
        time.sleep(20)  # longer than the grace period and the in-trial retries (~8-15 s)
        assert launcher.poll() is None, "the campaign ended during the outage"
        private_pg.start()

    code, logs, _ = campaign_under_fault(args, tmp_path, run_dir, outage)
    assert code == 0, logs[-3000:]
    assert "storage blip" in logs  # the workers saw the outage and retried
    assert "exited with" not in logs, logs[-3000:]  # ... without dying over it
    trials = _finished(url, "outage.criteria.s1")
    assert sum(t.state in FINISHED for t in trials) >= 40
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL)


def test_unreachable_mlflow_server_never_fails_a_trial(pg_url, tmp_path):
    tracking = f"http://127.0.0.1:{free_port()}"
    out = run_launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective",
                      "simulated", "--trials", "6", "--epochs", "2", "--workers", "2",
                      "--experiment", "nomlflow", "--storage", pg_url],
                     cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking})
    assert out.returncode == 0, out.stderr
    logs = "\n".join(p.read_text() for p in
                     sorted((tmp_path / "runs" / "nomlflow" / "logs").glob("*.log")))
    assert "tracking unavailable" in logs
    trials = _finished(pg_url, "nomlflow.criteria.s1")
    assert sum(t.state in FINISHED for t in trials) >= 6
    assert not [t for t in trials if t.state == TrialState.FAIL]
