"""Stage plans from launch/stages.toml."""

from __future__ import annotations

import pytest

from psy_agents.errors import ConfigError
from psy_agents.hpo.stages import PACKAGE_STAGES, load_plan, load_stages


def test_multi_plan_chain_and_refit():
    plan = load_plan("multi", PACKAGE_STAGES)
    assert [s.name for s in plan] == ["s0", "s1", "s2", "refit"]
    s2, refit = plan[2], plan[3]
    assert s2.narrow_from == "s1" and s2.top_k >= 1 and s2.pruner == "asha"
    assert refit.is_refit and refit.budget("criteria") >= 3 and refit.patience >= refit.epochs
    assert plan[0].train_fraction < 1


def test_max_plan_keeps_the_original_budgets():
    (stage,) = load_plan("max", PACKAGE_STAGES)
    assert {a: stage.budget(a) for a in ("criteria", "evidence", "share", "joint")} == \
        {"criteria": 800, "evidence": 1200, "share": 600, "joint": 600}
    assert (stage.epochs, stage.patience, stage.pruner) == (100, 20, "hyperband")


def test_unknown_plan_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown plan 'fast' — valid plans are: max, multi"):
        load_plan("fast", PACKAGE_STAGES)


def test_bad_stage_file(tmp_path):
    path = tmp_path / "stages.toml"
    path.write_text('[plans]\np = ["a"]\n[stages.a]\ntrials = 3\nepoch = 2\n')
    with pytest.raises(ConfigError, match=r"\[stages.a\]: unknown key 'epoch'"):
        load_plan("p", path)
    path.write_text('[stages.b]\ntrials = 3\nnarrow_from = "a"\n[stages.a]\ntrials = 0\n')
    with pytest.raises(ConfigError, match="builds on 'a', which does not come before it"):
        load_stages(["b"], path)
    with pytest.raises(ConfigError, match="`trials` is 0, but must be >= 1"):
        load_stages(["a"], path)


def test_refit_must_not_stop_early(tmp_path):
    path = tmp_path / "stages.toml"
    path.write_text('[stages.s]\ntrials = 3\n[stages.r]\nseeds = 3\nepochs = 5\n'
                    'patience = 2\nrefit_from = "s"\n')
    with pytest.raises(ConfigError, match=r"`patience` is 2, but must be >= epochs \(5\)"):
        load_stages(["s", "r"], path)
