"""Real `launch worker` subprocesses on real PostgreSQL and SQLite, simulated objective.

The simulated objective (objective = "simulated") is the engine's benchmark/test workload:
per-epoch reports, heavy-tailed epoch times, checkpoints — so these tests exercise the
real engine (budget, heartbeats, retries, resume, stage chain) in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo import spaces
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.history import finished_in_order, trial_score
from psy_agents.hpo.spec import CampaignOverrides, create_campaign, load_spec
from psy_agents.hpo.stages import StageConfig

LAUNCH = Path(sys.executable).parent / "launch"
SECRET = "Sup3rSecretPw"
FINAL = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
pytestmark = pytest.mark.postgres


def _with_password(pg_url: str) -> str:
    # trust auth ignores the password, so it is a real URL that must never be printed
    return pg_url.replace("postgres@", f"postgres:{SECRET}@", 1)


def _campaign(url, runs: Path, stages, *, workers, epoch_s=0.02, agents=("criteria",)):
    o = CampaignOverrides(objective="simulated", sim={"epoch_s": epoch_s, "seed": 1})
    return create_campaign(url, experiment="t", agents=list(agents), stages=stages,
                           n_workers=workers, overrides=o)


def _start(studies, index, cwd: Path, *, storage=None, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "PSY_STORAGE"} | (env_extra or {})
    cmd = [str(LAUNCH), "worker", "--index", str(index)]
    cmd += [a for s in studies for a in ("--study", s)]
    if storage:
        cmd += ["--storage", storage]
    log = open(cwd / f"worker-{index}.log", "w")  # noqa: SIM115 - closed by _wait
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT), log


def _wait(procs, timeout=120):
    codes = []
    for proc, log in procs:
        codes.append(proc.wait(timeout=timeout))
        log.close()
    return codes


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


def _logs(cwd: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(cwd.glob("worker-*.log")))


def _finished(trials):
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


S1 = StageConfig(name="s1", trials=16, epochs=4, patience=4, pruner="asha")


def test_four_workers_finish_the_budget_and_never_print_the_password(pg_url, tmp_path):
    url = _with_password(pg_url)
    camp = _campaign(url, tmp_path / "runs", (S1,), workers=4)
    procs = [_start(camp.study_names, i, tmp_path, storage=url) for i in range(4)]
    assert _wait(procs) == [0, 0, 0, 0], _logs(tmp_path)
    trials = _trials(url, "t.criteria.s1")
    assert _finished(trials) == 16  # claimed under the budget lock: no overshoot
    assert {t.state for t in trials} <= FINAL
    assert {t.user_attrs["worker_index"] for t in trials} == {0, 1, 2, 3}
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert any(t.user_attrs["epochs_run"] < 4 for t in pruned)  # ASHA stopped some early
    logs = _logs(tmp_path)
    assert "Traceback" not in logs and SECRET not in logs
    assert logs.count(" #") >= 16  # one line per trial


@pytest.mark.slow  # ~10 s idle, 25-35 s on the shared 2-core box
def test_eight_workers_started_at_once_on_a_new_database_run_exactly_the_budget(pg_url, tmp_path):
    # The sanity stage's shape: 8 workers, a budget of 4. Before budgets were claimed under
    # a lock, every free worker started a trial (10 ran); now the other 4 start none.
    s0 = StageConfig(name="s0", trials=4, epochs=1, patience=1, pruner="none")
    camp = _campaign(pg_url, tmp_path / "runs", (s0, S1), workers=8, epoch_s=0.01)
    procs = [_start(camp.study_names, i, tmp_path, storage=pg_url) for i in range(8)]
    assert _wait(procs) == [0] * 8, _logs(tmp_path)
    s0_trials = _trials(pg_url, "t.criteria.s0")
    assert len(s0_trials) == 4 and {t.state for t in s0_trials} == {TrialState.COMPLETE}
    trials = _trials(pg_url, "t.criteria.s1")
    assert _finished(trials) == 16 and len(trials) == 16
    assert {t.state for t in trials} <= FINAL


def _wait_for_running_trial(url, name, min_epochs, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in _trials(url, name):
            if t.state == TrialState.RUNNING and len(t.intermediate_values) >= min_epochs \
                    and "pid" in t.user_attrs:
                return t
        time.sleep(0.1)
    raise AssertionError("no trial reached the wanted epoch")


def test_sigkilled_worker_trial_is_retried_and_resumes_after_its_checkpoint(pg_url, tmp_path):
    stage = StageConfig(name="s1", trials=5, epochs=6, patience=6, pruner="none")
    camp = _campaign(pg_url, tmp_path / "runs", (stage,), workers=2, epoch_s=0.4)
    fast_heartbeat = {"PSY_HEARTBEAT_INTERVAL_S": "1", "PSY_GRACE_PERIOD_S": "3"}
    procs = [_start(camp.study_names, i, tmp_path, storage=pg_url, env_extra=fast_heartbeat)
             for i in range(2)]
    victim = _wait_for_running_trial(pg_url, "t.criteria.s1", min_epochs=2)
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    killed = [p for p in procs if p[0].pid == victim.user_attrs["pid"]]
    survivors = [p for p in procs if p[0].pid != victim.user_attrs["pid"]]
    assert _wait(survivors) == [0], _logs(tmp_path)
    _wait(killed)
    trials = {t.number: t for t in _trials(pg_url, "t.criteria.s1")}
    assert trials[victim.number].state == TrialState.FAIL
    last_reported = max(trials[victim.number].intermediate_values)
    (retry,) = [t for t in trials.values()
                if t.user_attrs.get("original_trial") == victim.number and t.number != victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    resumed = retry.user_attrs["resumed_from_epoch"]
    assert resumed in (last_reported, last_reported + 1)
    epochs = retry.params.get("epochs", 6)  # the epoch cap is searched too
    assert retry.user_attrs["epochs_run"] == epochs - (resumed + 1)  # only the epochs after it
    assert sorted(retry.intermediate_values) == list(range(epochs))
    assert _finished(trials.values()) == 5
    assert {t.state for t in trials.values()} <= FINAL


@pytest.mark.parametrize("n_workers", [1, 2])
def test_embedded_sqlite_default(tmp_path, n_workers):
    db = tmp_path / "runs" / "optuna.db"
    stage = StageConfig(name="s1", trials=8, epochs=3, patience=3, pruner="asha")
    camp = _campaign(f"sqlite:///{db}", tmp_path / "runs", (stage,), workers=n_workers)
    procs = [_start(camp.study_names, i, tmp_path) for i in range(n_workers)]  # no --storage
    assert _wait(procs) == [0] * n_workers, _logs(tmp_path)
    trials = _trials(f"sqlite:///{db}", "t.criteria.s1")
    assert 8 <= _finished(trials) <= 8 + n_workers - 1
    assert {t.state for t in trials} <= FINAL


CHAIN = (
    StageConfig(name="s0", trials=2, epochs=1, patience=1, train_fraction=0.25),
    StageConfig(name="s1", trials=10, epochs=3, patience=3, pruner="asha"),
    StageConfig(name="s2", trials=6, epochs=3, patience=3, pruner="asha", narrow_from="s1",
                top_k=3, margin=0.1),
    StageConfig(name="refit", seeds=3, epochs=3, patience=3, refit_from="s2"),
)


def test_stage_chain_runs_with_workers_alone(pg_url, tmp_path):
    runs = tmp_path / "runs"
    camp = _campaign(pg_url, runs, CHAIN, workers=2, epoch_s=0.01)
    procs = [_start(camp.study_names, i, tmp_path, storage=pg_url) for i in range(2)]
    assert _wait(procs) == [0, 0], _logs(tmp_path)
    storage = open_storage(pg_url)
    for stage in CHAIN:
        study, spec = load_spec(storage, f"t.criteria.{stage.name}")
        trials = study.get_trials()
        assert _finished(trials) >= spec.budget and {t.state for t in trials} <= FINAL
    s1, s1_spec = load_spec(storage, "t.criteria.s1")
    s2, s2_spec = load_spec(storage, "t.criteria.s2")
    first = finished_in_order(s1)[: s1_spec.budget]
    expected = spaces.narrow(s2_spec.search_space, [(t.params, trial_score(t)) for t in first],
                             top_k=3, margin=0.1)
    stored = spaces.space_from_json(s2.user_attrs["psy_narrowed_space"])
    assert stored == expected and stored != s2_spec.search_space
    shas = {line.rsplit("sha=", 1)[1] for line in _logs(tmp_path).splitlines()
            if "t.criteria.s2: space narrowed" in line}
    assert len(shas) == 1  # both workers saw one space
    by_name = {p.name: p for p in stored}
    for t in s2.get_trials():
        for name, value in t.params.items():
            p = by_name[name]
            assert value in p.choices if p.kind == "categorical" else p.low <= value <= p.high
    refit, _ = load_spec(storage, "t.criteria.refit")
    best_s2 = max((t for t in finished_in_order(s2)[: s2_spec.budget] if t.value is not None),
                  key=lambda t: (t.value, -t.number))
    for t in refit.get_trials():  # the refit samples nothing: every seed trains best_s2
        assert t.params == {} and t.user_attrs["params"] == best_s2.params
    metrics = json.loads((runs / "t" / "refit" / "criteria" / "metrics.json").read_text())
    assert metrics["split"] == "test" and len(metrics["seeds"]) >= 3
    value = metrics["metrics"]["value"]
    assert len(value["values"]) >= 3
    assert value["std"] == pytest.approx(statistics.stdev(value["values"]))  # sample stdev
    config = json.loads((runs / "t" / "refit" / "criteria" / "config.json").read_text())
    assert config["params"] and config["agent"] == "criteria"


def test_worker_cli_help_and_user_errors(pg_url, tmp_path):
    out = subprocess.run([str(LAUNCH), "worker", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "75 requeue me" in out.stdout and "PSY_STORAGE" in out.stdout
    # (An unreachable storage: tests/reliability/test_storage_faults.py, `worker` cases.)
    _campaign(pg_url, tmp_path / "runs", (S1,), workers=1)
    out = subprocess.run([str(LAUNCH), "worker", "--study", "t.nope.s1", "--index", "0",
                          "--storage", pg_url], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: no study named 't.nope.s1' in this storage — check "
                                  "--study (see `launch status`) or start it with `launch hpo`")


def test_worker_rides_out_dropped_database_connections(pg_url, tmp_path):
    import psycopg2

    stage = StageConfig(name="s1", trials=6, epochs=3, patience=3, pruner="none")
    camp = _campaign(pg_url, tmp_path / "runs", (stage,), workers=1, epoch_s=0.3)
    proc = _start(camp.study_names, 0, tmp_path, storage=pg_url)
    _wait_for_running_trial(pg_url, "t.criteria.s1", min_epochs=1)
    dbname = pg_url.rsplit("/", 1)[1]
    conn = psycopg2.connect(pg_url.replace("+psycopg2", "").rsplit("/", 1)[0] + "/test")
    conn.autocommit = True
    with conn.cursor() as cur:  # a Postgres restart, as the worker sees it
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'psy-agents'", (dbname,))
        assert cur.rowcount >= 1
    conn.close()
    assert _wait([proc]) == [0], _logs(tmp_path)
    trials = _trials(pg_url, "t.criteria.s1")
    assert _finished(trials) >= 6 and {t.state for t in trials} <= FINAL


def test_a_duplicate_retry_ends_unrun_and_the_first_retry_runs(tmp_path):
    """Two retries of one FAIL (what a Postgres restart inside the retry lock can queue; here
    queued with Optuna's own callback, no lock): the worker runs the first and fails the
    second at once with ``duplicate_of``, so two attempts never share a checkpoint."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from psy_agents.hpo.history import stage_space

    url = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    stage = StageConfig(name="s1", trials=2, epochs=2, patience=2)
    camp = _campaign(url, tmp_path / "runs", (stage,), workers=1)
    storage = open_storage(url)
    study, spec = load_spec(storage, "t.criteria.s1")
    planted = study.ask()
    spaces.suggest(planted, stage_space(storage, study, spec))
    planted.set_user_attr("fail_reason", "planted")
    study.tell(planted, state=TrialState.FAIL)
    for _ in range(2):
        RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study.trials[planted.number])
    assert _wait([_start(camp.study_names, 0, tmp_path)]) == [0], _logs(tmp_path)
    trials = _trials(url, "t.criteria.s1")
    first, second = trials[1], trials[2]
    assert first.state == TrialState.COMPLETE and first.params == planted.params
    assert first.intermediate_values and "duplicate_of" not in first.user_attrs
    assert second.state == TrialState.FAIL and not second.intermediate_values
    assert second.user_attrs["duplicate_of"] == first.number
    assert second.user_attrs["fail_reason"].startswith(f"duplicate retry of #{planted.number}:")
    assert _finished(trials) == 2  # the duplicate takes no budget
    logs = _logs(tmp_path)  # a verdict, logged in one line: no traceback
    assert f"#{second.number} FAIL" in logs and "Traceback" not in logs, logs
