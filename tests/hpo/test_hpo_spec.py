"""Campaigns and study specs on the real PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp

import optuna
import pytest

from psy_agents.errors import ConfigError, StorageError
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.spec import (
    BUDGET_HISTORY_ATTR,
    SPEC_ATTR,
    CampaignOverrides,
    create_campaign,
    load_spec,
)
from psy_agents.hpo.stages import PACKAGE_STAGES

SIM = CampaignOverrides(objective="simulated", trials=5, epochs=3)
SIM_NO_TRIALS = CampaignOverrides(objective="simulated", epochs=3)


def _campaign(url, **kw):
    args = dict(experiment="exp", agents=["criteria", "joint"], stages="multi", n_workers=3,
                overrides=SIM, stages_file=PACKAGE_STAGES)
    return create_campaign(url, **(args | kw))


def test_campaign_creates_every_study_with_its_spec(pg_url):
    camp = _campaign(pg_url)
    assert camp.study_names == ("exp.criteria.s0", "exp.joint.s0")
    assert len(camp.all_studies) == 8
    storage = open_storage(pg_url)
    study, spec = load_spec(storage, "exp.joint.s2")
    assert spec.chain == ("exp.joint.s0", "exp.joint.s1", "exp.joint.s2", "exp.joint.refit")
    assert spec.budget == 5 and spec.stage_config.narrow_from == "s1"
    assert spec.objective == "simulated" and spec.n_workers == 3
    assert spec.n_startup_trials >= 3
    assert {p.name for p in spec.search_space} >= {"lr", "loss_weight"}
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert load_spec(storage, "exp.joint.refit")[1].budget == 3  # seeds from stages.toml


def _state(url):
    """Every study's stored spec and budget history: what a refused launch must not touch."""
    return {s.study_name: dict(s.user_attrs) for s in open_storage(url).get_all_studies()}


def test_campaign_is_idempotent_and_joining_keeps_the_spec(pg_url):
    _campaign(pg_url)
    camp = _campaign(pg_url, n_workers=7)  # more workers join: not part of the identity
    assert len(optuna.get_all_study_names(open_storage(pg_url))) == 8
    assert camp.changes[0] == "exp.criteria.s0: joined (budget 5)" and len(camp.changes) == 8
    study, spec = load_spec(open_storage(pg_url), "exp.criteria.s1")
    assert spec.n_workers == 3 and spec.budget == 5  # the first launch's, kept
    assert [(h["budget"], h["workers"]) for h in study.user_attrs[BUDGET_HISTORY_ATTR]] == [
        (5, 3), (5, 7)]


def test_a_larger_trials_raises_every_search_budget_and_a_smaller_one_is_refused(pg_url):
    _campaign(pg_url)
    camp = _campaign(pg_url, overrides=CampaignOverrides(objective="simulated", trials=9,
                                                         epochs=3))
    assert "exp.joint.s2: budget raised from 5 to 9" in camp.changes
    storage = open_storage(pg_url)
    assert load_spec(storage, "exp.joint.s2")[1].budget == 9
    assert load_spec(storage, "exp.joint.refit")[1].budget == 3  # seeds: only --seeds moves it
    history = load_spec(storage, "exp.joint.s2")[0].user_attrs[BUDGET_HISTORY_ATTR]
    assert [h["budget"] for h in history] == [5, 9]
    _campaign(pg_url, overrides=SIM_NO_TRIALS)  # no --trials: the raised budget is kept
    assert load_spec(open_storage(pg_url), "exp.joint.s2")[1].budget == 9
    before = _state(pg_url)
    with pytest.raises(ConfigError, match=r"^--trials 4 would lower the budget of study "
                                          r"exp.criteria.s0 from 9: a budget can only grow — pass "
                                          r"--trials 9 or more"):
        _campaign(pg_url, overrides=CampaignOverrides(objective="simulated", trials=4, epochs=3))
    assert _state(pg_url) == before


def test_a_change_of_what_shapes_results_is_refused_naming_it_and_writes_nothing(pg_url):
    _campaign(pg_url)
    before = _state(pg_url)
    changed = CampaignOverrides(objective="simulated", trials=5, epochs=4)
    with pytest.raises(ConfigError, match=r"^study exp.criteria.s0 already exists with "
                                          r"different settings \(differs in: space, "
                                          r"stage.epochs\) — "):
        _campaign(pg_url, overrides=changed)
    fixed = CampaignOverrides(objective="simulated", trials=5, epochs=3, train={"dropout": 0.1})
    with pytest.raises(ConfigError, match=r"differs in: space, train_defaults\)"):
        _campaign(pg_url, overrides=fixed)
    assert _state(pg_url) == before


def test_one_stage_of_an_existing_chain_joins_that_chain(pg_url):
    _campaign(pg_url, agents=["criteria"])
    camp = _campaign(pg_url, agents=["criteria"], stages=["s1"],
                     overrides=CampaignOverrides(objective="simulated", trials=8, epochs=3))
    assert camp.changes == ("exp.criteria.s1: budget raised from 5 to 8",)
    storage = open_storage(pg_url)
    assert load_spec(storage, "exp.criteria.s1")[1].chain == (
        "exp.criteria.s0", "exp.criteria.s1", "exp.criteria.s2", "exp.criteria.refit")
    assert load_spec(storage, "exp.criteria.s0")[1].budget == 5  # not named: untouched


def test_a_spec_stored_without_newer_default_keys_still_joins(pg_url):
    _campaign(pg_url, agents=["criteria"])
    study = optuna.load_study(study_name="exp.criteria.s1", storage=open_storage(pg_url))
    older = dict(study.user_attrs[SPEC_ATTR])
    older["stage"] = {k: v for k, v in older["stage"].items() if k != "train_fraction"}
    study.set_user_attr(SPEC_ATTR, older)  # as a version without that stage key wrote it
    assert _campaign(pg_url, agents=["criteria"]).changes[1] == "exp.criteria.s1: joined (budget 5)"


def test_unknown_study_and_bad_experiment(pg_url):
    _campaign(pg_url)
    with pytest.raises(StorageError, match="no study named 'exp.nope.s0'"):
        load_spec(open_storage(pg_url), "exp.nope.s0")
    with pytest.raises(ConfigError, match="contains '.'"):
        _campaign(pg_url, experiment="a.b")


def _create(url, queue):
    try:
        _campaign(url)
        queue.put("ok")
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow  # ~10 s idle, 25-35 s on the shared 2-core box
def test_eight_processes_create_the_same_campaign_on_a_brand_new_database(pg_url):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_create, args=(pg_url, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * 8
    assert len(optuna.get_all_study_names(open_storage(pg_url))) == 8


def test_checkpoint_frequency_is_not_part_of_a_studys_identity(pg_url):
    from psy_agents.hpo.spec import identity

    _campaign(pg_url)
    stored = load_spec(open_storage(pg_url), "exp.criteria.s1")[1].to_json()
    other = {**stored, "stage": {**stored["stage"], "checkpoint_every": 3}}
    assert identity(other) == identity(stored)
    # ... while a setting that changes results still is
    assert identity({**stored, "stage": {**stored["stage"], "patience": 1}}) != identity(stored)
