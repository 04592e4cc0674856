"""Chaos: a real 4-worker local campaign while workers are SIGKILLed and Postgres restarts.

`launch hpo --backend local --workers 4 --objective simulated` runs against a private
PostgreSQL (tests/reliability/conftest.py). A seeded schedule SIGKILLs workers that are in
the middle of a trial until 4 kills have landed there (the local backend restarts each
worker; a kill that finds its trial just ended is a miss and is repeated) and restarts the
database once (`pg_ctl restart -m fast`). Each of the 4 killed trials must end FAIL as
stale (no heartbeat) with a retry that resumed from its checkpoint. Afterwards nothing may
be lost: the budget is met, no trial is RUNNING or WAITING, every FAIL says why and has a
finished retry, no reported epoch was computed twice, every completed value is the one its
params produce, and every trial that was COMPLETE just before the restart still is, with
the same value (workers commit with synchronous_commit off; a fast shutdown must flush
those commits).
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.simulated import epoch_value
from psy_agents.hpo.spec import load_spec
from tests.backends.helpers import wait_until
from tests.reliability.helpers import campaign_under_fault, chains, worker_pids

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
BUDGET = 120
EPOCHS = 6
KILLS = 4
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def _running_by_pid(storage, name: str) -> dict[int, optuna.trial.FrozenTrial]:
    """pid -> the RUNNING trial it owns, for trials that reported at least one epoch."""
    study = optuna.load_study(study_name=name, storage=storage)
    return {t.user_attrs["pid"]: t for t in study.get_trials(states=(TrialState.RUNNING,))
            if "pid" in t.user_attrs and t.intermediate_values}


@dataclass(frozen=True)
class Kill:
    """One SIGKILL: the trial its worker was running just before (RUNNING, 1+ epochs
    reported), and whether the worker died inside it (the trial still RUNNING after the
    kill: it was never told) rather than just after it ended."""

    trial: optuna.trial.FrozenTrial
    landed: bool


def _kill_a_busy_worker(rng, storage, run_dir, name) -> Kill:
    """SIGKILL a worker whose trial has reported an epoch and has 2+ epochs to go."""
    def pick():
        busy = {pid: t for pid, t in _running_by_pid(storage, name).items()
                if len(t.intermediate_values) <= EPOCHS - 2}
        pids = sorted(set(worker_pids(run_dir).values()) & set(busy))
        return (pids, busy) if pids else None

    pids, busy = wait_until(pick, 60, "a worker in mid-trial", step=0.05)
    pid = rng.choice(pids)
    os.kill(pid, signal.SIGKILL)
    trial = busy[pid]
    # A trial still RUNNING after its worker's death was being run when the kill came. Else
    # it ended (pruned, say) between the query and the kill: a miss, which _chaos repeats.
    return Kill(trial, storage.get_trial(trial._trial_id).state == TrialState.RUNNING)


def _chaos(launcher, private_pg, url, run_dir, name, seed=20261128):
    """SIGKILL busy workers until KILLS kills have landed mid-trial, restarting the database
    after the second kill; returns (the kills, COMPLETE values just before the restart)."""
    rng = random.Random(seed)
    wait_until(lambda: len(worker_pids(run_dir)) == 4, 60, "4 running workers")
    storage = open_storage(url)  # the launcher has created the schema by now
    kills, before_restart = [], {}
    while sum(k.landed for k in kills) < KILLS and len(kills) < 3 * KILLS:
        time.sleep(rng.uniform(0.5, 2.0))
        kills.append(_kill_a_busy_worker(rng, storage, run_dir, name))
        if len(kills) == 2:
            time.sleep(rng.uniform(0.2, 1.0))
            # Workers commit with synchronous_commit off: what others could already read
            # may not be flushed yet. A fast shutdown flushes it; check nothing is lost.
            study = optuna.load_study(study_name=name, storage=storage)
            before_restart = {t.number: t.value for t in
                              study.get_trials(states=(TrialState.COMPLETE,))}
            private_pg.restart()
        assert launcher.poll() is None, "the campaign ended before the chaos schedule did"
    return kills, before_restart


def _check_chain(chain, space, sim, killed_numbers):
    """One retry chain: FAILs explained and retried, no epoch redone, the value intact."""
    *failed, last = chain
    assert last.state in FINISHED, f"chain {chain[0].number} ends {last.state.name}"
    for prev, nxt in zip(chain, chain[1:], strict=False):
        assert prev.state == TrialState.FAIL, f"#{prev.number} is {prev.state.name}"
        assert prev.user_attrs.get("fail_reason"), f"FAIL #{prev.number} has no cause"
        # the retry keeps what was sampled; an attempt that died mid-sampling gets the rest
        assert prev.params.items() <= nxt.params.items()
        # every epoch the failed attempt reported was restored, not computed again
        if "resumed_from_epoch" not in nxt.user_attrs:
            continue  # nxt died before it finished; the next attempt is checked instead
        resumed = nxt.user_attrs["resumed_from_epoch"]
        done_before = -1 if resumed is None else resumed
        assert done_before + 1 >= len(prev.intermediate_values), (
            prev.number, prev.user_attrs, prev.datetime_start, prev.datetime_complete,
            nxt.number, nxt.user_attrs, nxt.datetime_start, nxt.datetime_complete, nxt.state)
    resumed = last.user_attrs["resumed_from_epoch"]
    restored = 0 if resumed is None else resumed + 1
    reported = len(last.intermediate_values)
    assert sorted(last.intermediate_values) == list(range(reported))
    if reported > restored:  # pruned during the replay of restored epochs runs nothing
        assert last.user_attrs["epochs_run"] == reported - restored
    for epoch, value in last.intermediate_values.items():
        assert value == pytest.approx(epoch_value(last.params, space, epoch, sim), abs=1e-12)
    if last.state == TrialState.COMPLETE:
        assert last.value == pytest.approx(max(last.intermediate_values.values()), abs=1e-12)
    return [t.number for t in failed if t.number in killed_numbers]


def test_sigkills_and_a_postgres_restart_lose_nothing(private_pg, tmp_path):
    url = private_pg.new_database()
    name = "chaos.criteria.s1"
    run_dir = tmp_path / "runs" / "chaos"
    args = ["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
            "--trials", str(BUDGET), "--epochs", str(EPOCHS), "--workers", "4",
            "--experiment", "chaos", "--storage", url, "--local-max-restarts", "20",
            "--local-restart-delay-s", "0.2"]
    code, logs, (kills, before_restart) = campaign_under_fault(
        args, tmp_path, run_dir, lambda launcher: _chaos(launcher, private_pg, url, run_dir, name),
        timeout_s=150)
    assert code == 0, logs[-4000:]
    study, spec = load_spec(open_storage(url), name)
    trials = study.get_trials()
    # A restart drops the budget lock: workers inside it may each start one trial too many.
    assert BUDGET <= sum(t.state in FINISHED for t in trials) <= BUDGET + 4 - 1
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    after = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
    assert before_restart and all(after.get(n) == v for n, v in before_restart.items())
    landed = [k.trial for k in kills if k.landed]
    assert len(landed) == KILLS, f"{len(landed)} of {len(kills)} kills landed mid-trial"
    killed_numbers = {t.number for t in landed}
    # A restart inside the retry lock can queue a retry twice; the second must end unrun
    # (FAIL, ``duplicate_of`` the first, same params, no epoch reported) and leave the chain.
    twins = [t for t in trials if "duplicate_of" in t.user_attrs]
    for twin in twins:
        first = trials[twin.user_attrs["duplicate_of"]]
        assert twin.state == TrialState.FAIL and not twin.intermediate_values, twin
        assert first.params == twin.params, twin  # both copy the failed trial's params
    by_chain = chains([t for t in trials if t not in twins])
    retried = []
    for chain in by_chain.values():
        retried += _check_chain(chain, spec.search_space, spec.sim, killed_numbers)
    for victim in landed:  # died inside its trial, was failed as stale, retried and resumed
        failed = trials[victim.number]
        assert failed.state == TrialState.FAIL, (victim.number, failed.state.name)
        assert failed.user_attrs["fail_reason"].startswith("no heartbeat for over "), failed
        last = by_chain[victim.user_attrs["original_trial"]][-1]
        assert last.number > victim.number and last.state in FINISHED, last
        resumed = last.user_attrs["resumed_from_epoch"]  # its checkpoint, not epoch 0
        assert resumed is not None and resumed >= len(victim.intermediate_values) - 1, last
    assert sorted(retried) == sorted(killed_numbers)  # each killed trial was failed + retried
    values = [(t.user_attrs["original_trial"], t.value) for t in trials
              if t.state == TrialState.COMPLETE]
    assert len({o for o, _ in values}) == len(values)  # one completed result per chain
    assert "Traceback" not in logs, logs[-4000:]
