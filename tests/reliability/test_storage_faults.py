"""Storage and tracking faults, end to end through `launch`.

- a storage URL to a closed port, to a host that drops packets, or with a wrong password
  (a server with scram-sha-256 auth): `launch hpo` and `launch worker` end with one line
  naming the cause and the fix, exit 2, within 10 s, print no password and create nothing;
- the database disappears for 30 s mid-campaign (the private server is stopped, then
  started again): workers wait and retry with backoff, and the budget completes;
- the MLflow server is unreachable: every trial still completes, each worker warns once
  per pause (psy_agents/tracking.py), and warns again when a server that came back is lost.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections import Counter

import optuna
import psycopg2
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.connect import StorageSettings, open_storage
from psy_agents.hpo.worker import BLIP_WAIT_MAX_S, MAX_BLIPS, blip_wait_s
from psy_agents.tracking import PAUSE_S, Tracker
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


def _down_exit(command) -> int:
    """The exit code for a database that does not answer: a worker asks its backend to
    start it again later (75); the launcher refuses, a user error (2)."""
    return 75 if command[0] == "worker" else 2


def _fails_at_start(command, url: str, cwd, secret: str, code: int = 2) -> tuple[str, float]:
    """Run `launch COMMAND --storage URL`; check exit ``code``, one line, no ``secret``, no
    file created. Returns (the line, seconds it took)."""
    before = _listing(cwd)
    started = time.monotonic()
    out = run_launch([*command, "--storage", url], cwd=cwd, timeout=60)
    elapsed = time.monotonic() - started
    assert out.returncode == code, out.stdout + out.stderr
    assert out.stdout == "" and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert secret not in out.stdout + out.stderr
    assert _listing(cwd) == before
    return lines[0], elapsed


def _masked(url: str) -> str:
    return url.replace(url.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1], "***", 1)


@COMMANDS
def test_closed_port_is_one_line_and_creates_nothing(tmp_path, command):
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nothing"
    line, elapsed = _fails_at_start(command, url, tmp_path, PASSWORD, _down_exit(command))
    assert line.startswith(f"error: cannot use storage {_masked(url)}: ")
    assert "Connection refused" in line and line.endswith(
        "— check the URL (--storage or PSY_STORAGE) and that the database is up")
    assert elapsed < 10  # a behaviour bound (refused, not hanging), not a benchmark


@COMMANDS
def test_host_that_drops_packets_is_one_line_within_10_s(tmp_path, command, blackhole_port):
    url = f"postgresql+psycopg2://postgres:{PASSWORD}@127.0.0.1:{blackhole_port}/nothing"
    line, elapsed = _fails_at_start(command, url, tmp_path, PASSWORD, _down_exit(command))
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


def _tracking_warning_gaps(log: str) -> tuple[int, list[int]]:
    """(number of ``tracking unavailable`` warnings in a worker log, seconds between each
    and the next). Worker lines start with HH:MM:SS."""
    when = [datetime.datetime.strptime(line[:8], "%H:%M:%S")
            for line in log.splitlines() if " tracking unavailable (" in line]
    return len(when), [int((b - a).total_seconds()) % 86_400
                       for a, b in zip(when, when[1:], strict=False)]


def test_unreachable_mlflow_server_never_fails_a_trial(pg_url, tmp_path):
    tracking = f"http://127.0.0.1:{free_port()}"
    out = run_launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective",
                      "simulated", "--trials", "6", "--epochs", "2", "--workers", "2",
                      "--experiment", "nomlflow", "--storage", pg_url],
                     cwd=tmp_path, env={"MLFLOW_TRACKING_URI": tracking})
    assert out.returncode == 0, out.stderr
    logs = {p.name: p.read_text()
            for p in sorted((tmp_path / "runs" / "nomlflow" / "logs").glob("worker-*.log"))}
    assert len(logs) == 2, list(logs)
    for name, log in logs.items():
        # Each trial's start tries to track; only the first try of a pause reaches MLflow
        # (and warns), the worker's next trials inside the pause make no call.
        count, gaps = _tracking_warning_gaps(log)  # whole seconds: a pause is >= 59
        assert count and all(gap >= PAUSE_S - 1 for gap in gaps), (name, gaps, log[-2000:])
    trials = _finished(pg_url, "nomlflow.criteria.s1")
    # 6 trials on 2 workers: one of them ran 3+, so it tried to track 3+ times.
    assert max(Counter(t.user_attrs["worker_index"] for t in trials).values()) >= 3
    assert sum(t.state in FINISHED for t in trials) >= 6
    assert not [t for t in trials if t.state == TrialState.FAIL]


@pytest.mark.slow  # MLflow's import and schema: ~20 s on the shared 2-core box
def test_tracking_warns_once_per_pause_and_again_when_the_server_is_lost_again(private_pg,
                                                                               caplog):
    """One tracker through two outages of a real tracking server (MLflow's store on the
    private PostgreSQL, stopped and started): one warning per pause however many calls it
    covers, a second pause when the first ends with the server still down, tracking back
    once the server is, and a warning at once when it is lost again. The pauses run on a
    clock the test moves, so no test waits out 60 s."""
    from mlflow import MlflowClient

    uri = private_pg.new_database()
    now = [0.0]
    tracker = Tracker(uri, "pauses", "pauses.criteria.s1", {"agent": "criteria"},
                      clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="psy_agents.tracking")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("tracking unavailable (")]

    tracker.start_trial(0, {"lr": 0.1})
    tracker.log_epoch(0, 0, 0.1)
    assert warnings() == [] and 0 in tracker.children
    private_pg.stop()
    try:
        for epoch in (1, 2, 3):  # the first call fails and starts a pause; the others wait
            tracker.log_epoch(0, epoch, 0.1)
        assert len(warnings()) == 1 and warnings()[0].startswith("tracking unavailable "
                                                                 "(log_epoch: ")
        now[0] += PAUSE_S - 1  # still paused: no call, no warning
        tracker.log_epoch(0, 4, 0.1)
        assert len(warnings()) == 1
        now[0] += 2  # the pause is over and the server still down: the next pause
        tracker.log_epoch(0, 5, 0.1)
        tracker.log_epoch(0, 6, 0.1)
        assert len(warnings()) == 2
    finally:
        private_pg.start()
    now[0] += PAUSE_S  # the server is back and the pause over: tracking resumes, silently
    tracker.log_epoch(0, 7, 0.7)
    tracker.end_trial(0, "COMPLETE", 0.7, {})
    tracker.start_trial(1, {"lr": 0.2})
    assert len(warnings()) == 2 and 1 in tracker.children
    private_pg.stop()
    try:
        tracker.log_epoch(1, 0, 0.2)  # lost again: a new pause, warned at once
        tracker.log_epoch(1, 1, 0.2)
        assert len(warnings()) == 3
    finally:
        private_pg.start()
    assert all("Connection refused" in w for w in warnings()), warnings()
    # Only the calls outside the pauses reached the server: epochs 0 and 7 of trial 0.
    history = MlflowClient(uri).get_metric_history(tracker.ended[0], "value")
    assert [m.step for m in history] == [0, 7]


def test_loop_backoff_is_capped_jittered_and_waits_out_minutes():
    """Uncapped doubling once left a worker asleep for 32 s after a 30 s outage had ended;
    the cap bounds that delay, the count bounds the outage waited out."""
    lowest = [blip_wait_s(b, lambda lo, hi: lo) for b in range(1, MAX_BLIPS + 1)]
    highest = [blip_wait_s(b, lambda lo, hi: hi) for b in range(1, MAX_BLIPS + 1)]
    assert highest[:5] == [2, 4, 8, 15, 15] and max(highest) == BLIP_WAIT_MAX_S
    assert lowest[:4] == [1, 2, 4, 7.5]
    # Even with the shortest jitter every time, a worker waits out a 4-minute outage.
    assert sum(lowest) > 240
