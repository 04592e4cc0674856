"""Load: 64 workers join one study at once; `launch doctor` says whether a storage can take N.

The 64 workers run on the private PostgreSQL (max_connections 200, see conftest) so that the
shared server keeps serving other tests. Every 0.1 s the test counts each worker process's
connections (pg_stat_activity's client port, mapped to its process through psutil): never
more than 2 (pool of 2: main thread + heartbeat), 3 while one of them holds or waits for a
study lock.
`launch doctor` also runs against real databases stamped with an older Optuna schema and
whose clock runs ahead of this host.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections import Counter, defaultdict

import psutil
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.connect import StorageSettings, open_storage
from psy_agents.hpo.doctor import (
    check_connections,
    check_schema,
    check_skew,
    connections_per_worker,
    optuna_head,
)
from psy_agents.hpo.spec import CampaignOverrides, create_campaign, load_spec
from psy_agents.hpo.stages import StageConfig
from tests.reliability.conftest import free_port
from tests.reliability.helpers import launch_argv, launch_env, run_launch

pytestmark = pytest.mark.postgres
N_WORKERS = 64


# The README's numbers, not the code's settings: at most 2 connections per worker (its pool:
# main thread + heartbeat thread), one more while it holds or waits for a study lock.
PER_WORKER = 2
WHILE_CLAIMING = 3
# Each client connection to the database: its port on this host, and whether its backend
# holds or waits for an advisory lock (a study's budget or retry lock).
_SAMPLE = """SELECT a.client_port, l.pid IS NOT NULL FROM pg_stat_activity a
             LEFT JOIN (SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory') l
             ON l.pid = a.pid WHERE a.datname = %s AND a.client_port > 0"""


def _port_owners(server_port: int) -> dict[int, int]:
    """Local port -> pid of every TCP connection on this host to ``server_port``."""
    return {c.laddr.port: c.pid for c in psutil.net_connections("tcp4")
            if c.raddr and c.raddr.port == server_port and c.pid}


def _watch_connections(pg, db: str, stop: threading.Event,
                       seen: dict[int, list[tuple[int, bool]]], peak: list[int]) -> None:
    """Every 0.1 s until ``stop``: per client process, (its connections to ``db``, whether
    one holds or waits for an advisory lock) into ``seen[pid]``; the total into ``peak``."""
    owners: dict[int, int] = {}
    conn = pg.admin()
    with conn.cursor() as cur:
        while not stop.wait(0.1):
            cur.execute(_SAMPLE, (db,))
            rows = cur.fetchall()
            peak[0] = max(peak[0], len(rows))
            if any(port not in owners for port, _ in rows):
                owners = _port_owners(pg.port)
            per_pid: dict[int, list[bool]] = defaultdict(list)
            for port, locking in rows:
                if port in owners:  # else closed before psutil looked: not counted
                    per_pid[owners[port]].append(locking)
            for pid, locks in per_pid.items():
                seen[pid].append((len(locks), any(locks)))
    conn.close()


@pytest.mark.slow
def test_64_workers_at_once_finish_without_connection_errors(private_pg, tmp_path):
    url = private_pg.new_database()
    db = url.rsplit("/", 1)[1]
    stage = StageConfig(name="s1", trials=N_WORKERS, epochs=2, patience=2, pruner="none")
    camp = create_campaign(url, experiment="load", agents=["criteria"], stages=[stage],
                           n_workers=N_WORKERS, overrides=CampaignOverrides(
                               objective="simulated", sim={"epoch_s": 0.2, "seed": 3}))
    stop, peak, seen = threading.Event(), [0], defaultdict(list)
    watcher = threading.Thread(target=_watch_connections,
                               args=(private_pg, db, stop, seen, peak))
    watcher.start()
    logs, procs = [], []
    try:
        for i in range(N_WORKERS):
            log = open(tmp_path / f"w{i}.log", "w")  # noqa: SIM115 - closed below
            logs.append(log)
            procs.append(subprocess.Popen(
                launch_argv("worker", "--study", camp.study_names[0], "--index", str(i),
                            "--storage", url), cwd=tmp_path, env=launch_env(),
                stdout=log, stderr=subprocess.STDOUT))
        codes = [p.wait(timeout=400) for p in procs]
    finally:
        stop.set()
        watcher.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    text = "\n".join((tmp_path / f"w{i}.log").read_text() for i in range(N_WORKERS))
    assert codes == [0] * N_WORKERS, text[-3000:]
    for phrase in ("too many clients", "storage blip", "Traceback", "OperationalError"):
        assert phrase not in text, phrase
    study, spec = load_spec(open_storage(url), camp.study_names[0])
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= spec.budget
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    # Per worker process, in every sample: at most 2 connections, 3 while one of them holds
    # or waits for a study lock.
    by_worker = {p.pid: seen[p.pid] for p in procs}
    assert all(by_worker.values()), [pid for pid, s in by_worker.items() if not s]
    over = [(pid, n, locking) for pid, samples in by_worker.items()
            for n, locking in samples if n > (WHILE_CLAIMING if locking else PER_WORKER)]
    held = Counter(n for samples in by_worker.values() for n, _ in samples)
    assert not over, (over[:20], held)  # (pid, connections, locking); samples per count
    # + this test process's own pool (create_campaign): at most pool + overflow = 4
    assert 0 < peak[0] <= N_WORKERS * PER_WORKER + 4, peak[0]


def test_connection_check_fails_ok_and_warns_at_the_right_counts():
    s = StorageSettings()
    assert connections_per_worker(s) == (2, 4)
    assert check_connections(100, 3, 1, 64, s).status == "fail"  # 133 > 96
    assert check_connections(200, 3, 1, 64, s).status == "warn"  # 133 fits, 261 does not
    assert check_connections(300, 3, 1, 64, s).status == "ok"
    fix = check_connections(100, 3, 1, 64, s).fix
    assert fix.startswith("set max_connections >= 265 in postgresql.conf")
    assert [check_skew(x).status for x in (0.5, -5.0, 45.0)] == ["ok", "warn", "fail"]
    assert check_schema(None, "v3.2.0.a").status == "ok"
    assert check_schema("v3.0.0.d", "v3.2.0.a").status == "fail"


def test_doctor_cli_on_a_real_server_and_a_closed_port(pg_url, tmp_path):
    open_storage(pg_url, create_schema=True)
    out = run_launch(["doctor", "--storage", pg_url, "--workers", "4"], cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["reach:", "schema:", "connections:", "clock:"]
    assert all(line.startswith("ok ") for line in lines), lines
    out = run_launch(["doctor", "--storage", pg_url, "--workers", "5000"], cwd=tmp_path)
    assert out.returncode == 2
    (bad,) = [line for line in out.stdout.splitlines() if line.startswith("fail")]
    assert bad.startswith("fail connections: max_connections ") and "5000 workers need" in bad
    closed = f"postgresql+psycopg2://postgres:pw-x9@127.0.0.1:{free_port()}/x"
    out = run_launch(["doctor", "--storage", closed], cwd=tmp_path)
    assert out.returncode == 2 and "pw-x9" not in out.stdout + out.stderr
    assert out.stdout.startswith("fail reach: cannot connect to postgresql+psycopg2://postgres:"
                                 "***@127.0.0.1:")
    assert os.listdir(tmp_path) == []  # the doctor creates nothing


def _sql(url: str, *statements: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(sqlalchemy.text(statement))
    engine.dispose()


def _doctor(url: str, cwd) -> tuple[int, dict[str, str]]:
    out = run_launch(["doctor", "--storage", url, "--workers", "2"], cwd=cwd)
    assert out.stderr == "" and "Traceback" not in out.stdout
    lines = {line.split()[1].rstrip(":"): line for line in out.stdout.splitlines()}
    assert list(lines) == ["reach", "schema", "connections", "clock"], out.stdout
    return out.returncode, lines


def test_doctor_cli_on_an_old_schema_and_a_skewed_database_clock(pg_url, tmp_path):
    open_storage(pg_url, create_schema=True)
    head = optuna_head()
    _sql(pg_url, "UPDATE alembic_version SET version_num = 'v3.0.0.d'")  # an older Optuna's
    code, lines = _doctor(pg_url, tmp_path)
    assert code == 2
    assert lines["schema"] == (f"fail schema: database has Optuna schema v3.0.0.d, installed "
                               f"Optuna expects {head} — run `optuna storage upgrade --storage "
                               "URL`, or install the Optuna version that created it")
    assert lines["clock"].startswith("ok   clock:")

    # The database's clock runs ahead of this host: a clock_timestamp() that shadows the
    # built-in one (search_path puts its schema before pg_catalog) for this database only.
    db = pg_url.rsplit("/", 1)[1]
    _sql(pg_url, f"UPDATE alembic_version SET version_num = '{head}'",
         "CREATE SCHEMA skew", "CREATE TABLE skew.ahead (s int)",
         "INSERT INTO skew.ahead VALUES (45)",
         "CREATE FUNCTION skew.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS "
         "$$ SELECT pg_catalog.clock_timestamp() + make_interval(secs => "
         "(SELECT s FROM skew.ahead)) $$",
         f'ALTER DATABASE "{db}" SET search_path = public, skew, pg_catalog')
    code, lines = _doctor(pg_url, tmp_path)
    assert code == 2 and lines["schema"] == f"ok   schema: Optuna schema {head}"
    assert lines["clock"].startswith("fail clock: database clock +4") and lines["clock"].endswith(
        "s from this host — sync the clocks (NTP/chrony) on this host and the database server")
    _sql(pg_url, "UPDATE skew.ahead SET s = 6")  # a few seconds: a warning, not a failure
    code, lines = _doctor(pg_url, tmp_path)
    assert code == 0 and lines["clock"].startswith("warn clock: database clock +")
    assert "enable NTP/chrony" in lines["clock"]
