"""Warm starts and plateau stops (psy_agents.hpo.warm): the pure rules, then the queue on real
storage, then real `launch worker` subprocesses (simulated objective) running stage chains.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.hpo import spaces
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.history import finished_in_order, trial_score
from psy_agents.hpo.results import StudyStatus, format_status, progress_line
from psy_agents.hpo.spaces import Param
from psy_agents.hpo.spec import STOPPED_ATTR, CampaignOverrides, create_campaign, load_spec
from psy_agents.hpo.stages import StageConfig
from psy_agents.hpo.warm import RANK_ATTR, WARM_ATTR, plateau_reason, project, queue_once

LAUNCH = Path(sys.executable).parent / "launch"
SPACE = (
    Param("lr", "float", 1e-4, 1e-3, log=True),
    Param("head_layers", "int", 2, 3),
    Param("epochs", "int", 4, 8),
    Param("dropout", "float", 0.1, 0.2),
    Param("pooling", "categorical", choices=("cls",)),
    Param("cls_loss", "categorical", choices=("bce", "focal")),
    Param("focal_gamma", "float", 1.0, 2.0, when=("cls_loss", "focal")),
)


# --- pure rules -------------------------------------------------------------------------


def test_project_clips_rounds_drops_and_names_what_cannot_be_projected():
    params = {"lr": 5e-3, "head_layers": 2.6, "epochs": 11, "dropout": 0.15, "pooling": "mean",
              "cls_loss": "focal", "focal_gamma": 3.5, "gone": 7}
    projected, lost = project(params, SPACE)
    # lr above the range -> its high end; an int is rounded (2.6 -> 3), then clipped (11 ->
    # 8); a value inside stays; a param the space lacks is dropped; "mean" is not a choice:
    # named, not kept.
    assert projected == {"lr": 1e-3, "head_layers": 3, "epochs": 8, "dropout": 0.15,
                         "cls_loss": "focal", "focal_gamma": 2.0}
    assert isinstance(projected["head_layers"], int)
    assert lost == ("pooling",)


def test_project_keeps_a_conditional_param_only_when_its_condition_holds():
    projected, lost = project({"cls_loss": "bce", "focal_gamma": 1.5}, SPACE)
    assert projected == {"cls_loss": "bce"} and lost == ()
    # absent from the source: left to the sampler; a string for a number cannot be projected
    projected, lost = project({"dropout": "high"}, SPACE)
    assert projected == {} and lost == ("dropout",)


@pytest.mark.parametrize(("values", "n", "min_gain", "expected"), [
    ([0.5, 0.4, 0.45, 0.5], 3, 0.0, "plateau: 3 trials without a gain of 0 over 0.5000"),
    ([0.5, 0.4, 0.45, 0.51], 3, 0.0, None),  # the last one beats the best
    ([0.5, 0.4, 0.45, 0.7], 3, 0.25, "plateau: 3 trials without a gain of 0.25 over 0.5000"),
    ([0.5, 0.4, 0.45, 0.75], 3, 0.25, None),  # a gain of exactly min_gain counts
    ([0.5, 0.4, 0.45], 3, 0.0, None),  # no trial before the last 3: nothing to compare
    ([None, 0.4, 0.3, 0.2], 3, 0.0, None),  # the trial before holds no value (pruned)
    ([0.3, 0.6, None, 0.5, 0.55], 3, 0.0, "plateau: 3 trials without a gain of 0 over 0.6000"),
    ([0.3, 0.6, None, 0.5, 0.55], 0, 0.0, None),  # 0: off
])
def test_plateau_rule(values, n, min_gain, expected):
    assert plateau_reason(values, n, min_gain) == expected


def _row(stopped="", running=0, finished=4, budget=10):
    counts = {"COMPLETE": finished, "PRUNED": 0, "RUNNING": running, "FAIL": 0, "WAITING": 0}
    return StudyStatus("e.criteria.s1", budget, counts, 0.7, None, None, 0, agent="criteria",
                       stage="s1", stopped=stopped)


def test_a_stopped_stage_ends_once_idle_and_says_why():
    reason = "plateau: 3 trials without a gain of 0.001 over 0.7000"
    assert not _row().ended and not _row(reason, running=1).ended and _row(reason).ended
    assert format_status(_row(reason)).endswith(f"workers=0  stopped: {reason}")
    assert "stopped" not in format_status(_row())
    assert progress_line([_row(reason)]).startswith("done: 1 study")


# --- the queue on real storage ----------------------------------------------------------


def _campaign(url, stages, *, experiment="t", workers=1, epoch_s=0.01):
    # The smooth curve: these tests are about which trials run, whatever the curves' shapes.
    o = CampaignOverrides(objective="simulated",
                          sim={"epoch_s": epoch_s, "seed": 1, "curve": "smooth"})
    return create_campaign(url, experiment=experiment, agents=["criteria"], stages=stages,
                           n_workers=workers, overrides=o)


CONFIGS = [{"lr": 1e-3 * (i + 1), "dropout": 0.1} for i in range(8)]


@pytest.mark.postgres
def test_queue_once_racing_callers_queue_each_config_once_within_the_budget(pg_url):
    _campaign(pg_url, (StageConfig(name="s1", trials=5, epochs=1),))
    # one storage (engine, pool) per caller, as each worker process has its own
    studies = [optuna.load_study(study_name="t.criteria.s1", storage=open_storage(pg_url))
               for _ in range(4)]
    barrier = threading.Barrier(len(studies))
    counts: list[int] = []

    def call(study):
        barrier.wait()
        counts.append(queue_once(study, CONFIGS, "src"))

    threads = [threading.Thread(target=call, args=(s,)) for s in studies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert queue_once(studies[0], CONFIGS, "src") == 0  # a later call: marked done
    trials = studies[0].get_trials()
    assert sorted(counts) == [0, 0, 0, 5]  # one caller queued, capped at the budget (5)
    assert [t.state for t in trials] == [TrialState.WAITING] * 5
    assert [t.user_attrs[RANK_ATTR] for t in trials] == [0, 1, 2, 3, 4]
    assert studies[0].user_attrs[WARM_ATTR] == {"source": "src", "queued": 5}


def test_queue_once_completes_an_interrupted_queue_without_doubles(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _campaign(url, (StageConfig(name="s1", trials=5, epochs=1),))
    study = optuna.load_study(study_name="t.criteria.s1", storage=open_storage(url))
    # a launcher that died after queuing rank 0 and before marking the study
    study.enqueue_trial(CONFIGS[0], user_attrs={RANK_ATTR: 0})
    assert queue_once(study, CONFIGS[:3], "src") == 2
    assert [t.user_attrs[RANK_ATTR] for t in study.get_trials()] == [0, 1, 2]
    assert [t.params for t in study.get_trials()] == [{}, {}, {}]  # params are fixed at ask
    assert [t.system_attrs["fixed_params"] for t in study.get_trials()] == CONFIGS[:3]


# --- real workers -----------------------------------------------------------------------


def _run_workers(url, studies, cwd: Path, n: int):
    procs = []
    for i in range(n):
        cmd = [str(LAUNCH), "worker", "--index", str(i), "--storage", url]
        cmd += [a for s in studies for a in ("--study", s)]
        log = open(cwd / f"worker-{i}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for proc, log in procs:
        codes.append(proc.wait(timeout=180))
        log.close()
    logs = "\n".join(p.read_text() for p in sorted(cwd.glob("worker-*.log")))
    return codes, logs


S1 = StageConfig(name="s1", trials=8, epochs=2, patience=2, pruner="none")


@pytest.mark.postgres
def test_a_warm_started_s2_runs_the_projected_top_k_of_s1_first(pg_url, tmp_path):
    s2 = StageConfig(name="s2", trials=6, epochs=2, patience=2, narrow_from="s1", top_k=4,
                     margin=0.0, warm_start=3)
    camp = _campaign(pg_url, (S1, s2), workers=2)
    codes, logs = _run_workers(pg_url, camp.study_names, tmp_path, 2)
    assert codes == [0, 0], logs
    storage = open_storage(pg_url)
    s1_study, s1_spec = load_spec(storage, "t.criteria.s1")
    s2_study, _ = load_spec(storage, "t.criteria.s2")
    narrowed = spaces.space_from_json(s2_study.user_attrs["psy_narrowed_space"])
    first = finished_in_order(s1_study)[: s1_spec.budget]
    top = spaces.top_trials([(t.params, trial_score(t)) for t in first], 3)
    expected = [project(p, narrowed)[0] for p in top]
    trials = sorted(s2_study.get_trials(), key=lambda t: t.number)
    assert [t.params for t in trials[:3]] == expected  # the first three, in rank order
    assert [t.user_attrs.get(RANK_ATTR) for t in trials] == [0, 1, 2, None, None, None]
    assert all(t.state == TrialState.COMPLETE for t in trials) and len(trials) == 6
    assert logs.count("t.criteria.s2: queued the 3 best configurations of t.criteria.s1") == 1


@pytest.mark.postgres
def test_a_plateau_stops_a_stage_early_and_the_chain_moves_on(pg_url, tmp_path):
    # Values lie in about [0, 1], so no trial can gain 2: the stage stops after 4 finished.
    s1 = StageConfig(name="s1", trials=40, epochs=1, patience=1, pruner="none",
                     stop_after_trials_without_gain=3, min_gain=2.0)
    chain = (s1, StageConfig(name="s2", trials=3, epochs=1, narrow_from="s1", top_k=2),
             StageConfig(name="refit", seeds=2, epochs=1, patience=1, refit_from="s2"))
    camp = _campaign(pg_url, chain, workers=2)
    codes, logs = _run_workers(pg_url, camp.study_names, tmp_path, 2)
    assert codes == [0, 0], logs
    storage = open_storage(pg_url)
    s1_study, _ = load_spec(storage, "t.criteria.s1")
    reason = s1_study.user_attrs[STOPPED_ATTR]
    assert reason.startswith("plateau: 3 trials without a gain of 2 over ")
    s1_trials = s1_study.get_trials()
    # 4 finished when the first worker saw the plateau; the other's running trial finished
    assert 4 <= len(s1_trials) <= 5 and {t.state for t in s1_trials} == {TrialState.COMPLETE}
    values = [t.value for t in finished_in_order(s1_study)]
    # the best before the 3 last trials of the 4 (or 5) finished when the plateau was seen
    assert reason.rsplit(" ", 1)[1] in {f"{max(values[:m - 3]):.4f}" for m in (4, len(values))}
    for name, n in (("t.criteria.s2", 3), ("t.criteria.refit", 2)):  # the chain went on
        states = [t.state for t in optuna.load_study(study_name=name, storage=storage).trials]
        assert states == [TrialState.COMPLETE] * n, name
    out = subprocess.run([str(LAUNCH), "status", "--storage", pg_url], capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    s1_line = next(line for line in out.stdout.splitlines() if line.startswith("t.criteria.s1"))
    assert s1_line.endswith(f"stopped: {reason}")
    assert "stopped" not in out.stdout.replace(s1_line, "")
