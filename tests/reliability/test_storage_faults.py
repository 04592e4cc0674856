"""Storage and tracking faults, end to end through `launch`.

- a storage URL to a closed port, to a host that drops packets, or with a wrong password
  (a server with scram-sha-256 auth): `launch hpo` and `launch worker` end with one line
  naming the cause and the fix, exit 2, within 10 s, print no password and create nothing;
- the database disappears for 30 s mid-campaign (the private server is stopped, then
  started again): workers wait and retry with backoff, and the budget completes;
- the MLflow server is unreachable: every trial still completes.
"""

from __future__ import annotations

import datetime
import time

import optuna
import psycopg2
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.connect import StorageSettings, open_storage
from psy_agents.hpo.worker import BLIP_WAIT_MAX_S, MAX_BLIPS, blip_wait_s
from tests.backends.helpers import wait_until
from tests.reliability.conftest import free_port
from tests.reliability.helpers import campaign_under_fault, run_launch, worker_pids

pytestmark = pytest.mark.postgres
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
PASSWORD = "cl0sed-P0rt-pw"
OUTAGE_S = 30


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


COMMANDS = pytest.mark.parametrize("command", [
    ["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
     "--trials", "2", "--workers", "2"],
    ["worker", "--study", "e.criteria.s1", "--index", "0"],
], ids=["hpo", "worker"])
# Interpreter start-up and imports on a busy 2-core runner, on top of the connect timeout.
START_UP_S = 5.0


def _fails_at_start(command, url: str, cwd, secret: str) -> tuple[str, float]:
    """Run `launch COMMAND --storage URL`; check exit 2, one line, no ``secret``, no file
    created. Returns (the line, seconds it took)."""
    before = _listing(cwd)
    started = time.monotonic()
    out = run_launch([*command, "--storage", url], cwd=cwd, timeout=60)
    elapsed = time.monotonic() - started
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert secret not in out.stdout + out.stderr
    assert _listing(cwd) == before
    return lines[0], elapsed


def _masked(url: str) -> str:
    return url.replace(url.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1], "***", 1)


@COMMANDS
def test_closed_port_is_one_line_exit_2_and_creates_nothing(tmp_path, command):
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nothing"
    line, elapsed = _fails_at_start(command, url, tmp_path, PASSWORD)
    assert line.startswith(f"error: cannot use storage {_masked(url)}: ")
    assert "Connection refused" in line and line.endswith(
        "— check the URL (--storage or PSY_STORAGE) and that the database is up")
    assert elapsed < 10  # a behaviour bound (refused, not hanging), not a benchmark


@COMMANDS
def test_host_that_drops_packets_is_one_line_exit_2_within_10_s(tmp_path, command,
                                                                 blackhole_port):
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{blackhole_port}/nothing"
    line, elapsed = _fails_at_start(command, url, tmp_path, PASSWORD)
    assert line == (f"error: cannot use storage {_masked(url)}: connection to server at "
                    f'"127.0.0.1", port {blackhole_port} failed: timeout expired — check the '
                    "host and port in the URL (--storage or PSY_STORAGE): nothing answered (a "
                    "host that is down, or a firewall dropping packets between here and the "
                    "database)")
    # One connection attempt, given up after the connect timeout: the "within 10 s".
    timeout = StorageSettings().connect_timeout_s
    assert timeout - 0.5 <= elapsed < timeout + START_UP_S <= 10, elapsed


@COMMANDS
def test_wrong_password_is_one_line_exit_2_and_creates_nothing(password_pg, tmp_path, command):
    right = password_pg.new_database()
    wrong = right.replace(f":{password_pg.password}@", ":WR0NG-pw-5521@", 1)
    line, elapsed = _fails_at_start(command, wrong, tmp_path, "WR0NG-pw-5521")
    assert line == (f"error: cannot use storage {_masked(wrong)}: connection to server at "
                    f'"127.0.0.1", port {password_pg.port} failed: FATAL: password '
                    'authentication failed for user "postgres" — check the user name and '
                    "password in the URL (--storage or PSY_STORAGE)")
    assert elapsed < 10
    # Nothing was created in the database; the right password does get in (so it was the
    # password that was refused, not something else about the server).
    with psycopg2.connect(host="127.0.0.1", port=password_pg.port, user="postgres",
                          password=password_pg.password, dbname=right.rsplit("/", 1)[1],
                          connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
        assert cur.fetchone()[0] == 0


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

    def outage(launcher) -> datetime.datetime:
        wait_until(lambda: len(worker_pids(run_dir)) == 2, 60, "2 running workers")
        wait_until(lambda: sum(t.state in FINISHED for t in
                               _finished(url, "outage.criteria.s1")) >= 3, 60, "3 finished trials")
        private_pg.stop()
        # 30 s (the outage): longer than the grace period (3 s) and the in-trial
        # retries (~8-15 s), so each worker's loop has to back off and wait it out too.
        time.sleep(OUTAGE_S)
        assert launcher.poll() is None, "the campaign ended during the outage"
        private_pg.start()
        return datetime.datetime.now()  # Optuna's trial times are naive local times too

    code, logs, back = campaign_under_fault(args, tmp_path, run_dir, outage)
    assert code == 0, logs[-3000:]
    for index in (0, 1):  # each worker outlasted its in-trial retries and backed off in its loop
        assert f"[w{index}] storage blip (" in logs, logs[-3000:]
    assert "exited with" not in logs, logs[-3000:]  # ... without dying over it
    trials = _finished(url, "outage.criteria.s1")
    # Each worker was back at work soon after the database: its backoff is capped (an
    # uncapped doubling left one asleep for 32 s after the outage had ended).
    for index in (0, 1):
        first = min(t.datetime_complete for t in trials if t.datetime_complete
                    and t.datetime_complete > back and t.user_attrs.get("worker_index") == index)
        assert (first - back).total_seconds() < BLIP_WAIT_MAX_S + 10, (index, first, back)
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


def test_loop_backoff_is_capped_jittered_and_waits_out_minutes():
    """Uncapped doubling once left a worker asleep for 32 s after a 30 s outage had ended;
    the cap bounds that delay, the count bounds the outage waited out."""
    lowest = [blip_wait_s(b, lambda lo, hi: lo) for b in range(1, MAX_BLIPS + 1)]
    highest = [blip_wait_s(b, lambda lo, hi: hi) for b in range(1, MAX_BLIPS + 1)]
    assert highest[:5] == [2, 4, 8, 15, 15] and max(highest) == BLIP_WAIT_MAX_S
    assert lowest[:4] == [1, 2, 4, 7.5]
    # Even with the shortest jitter every time, a worker waits out a 4-minute outage.
    assert sum(lowest) > 240
