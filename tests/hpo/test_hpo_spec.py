"""Campaigns and study specs on the real PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp

import optuna
import pytest

from psy_agents.errors import ConfigError, StorageError
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.spec import CampaignOverrides, create_campaign, load_spec
from psy_agents.hpo.stages import PACKAGE_STAGES

SIM = CampaignOverrides(objective="simulated", trials=5, epochs=3)


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


def test_campaign_is_idempotent_and_rejects_a_changed_spec(pg_url):
    _campaign(pg_url)
    _campaign(pg_url)
    assert len(optuna.get_all_study_names(open_storage(pg_url))) == 8
    changed = CampaignOverrides(objective="simulated", trials=9, epochs=3)
    with pytest.raises(ConfigError, match=r"study exp.criteria.s0 already exists with a "
                                          r"different spec \(differs in: budget, stage\)"):
        _campaign(pg_url, overrides=changed)


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
