"""The simulated benchmark/test workload: deterministic, resumable, preemptible."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from psy_agents.errors import Preempted
from psy_agents.hpo import simulated as sim_mod
from psy_agents.hpo.spaces import agent_space

SPACE = agent_space("criteria", ("tiny",), 8)
PARAMS = {"lr": 1e-4, "dropout": 0.1, "batch_size": 16, "cls_loss": "bce"}
SIM = {"epoch_s": 0.5, "seed": 4}


def _run(ckpt, *, epochs=5, prune_at=None, stop_at=None, waits=None):
    reports = []

    def report(value, epoch):
        reports.append((epoch, value))
        return prune_at is not None and epoch >= prune_at

    def wait(seconds):
        if waits is not None:
            waits.append(seconds)
        return stop_at is not None and len(reports) >= stop_at

    out = sim_mod.run_simulated(PARAMS, SPACE, epochs=epochs, sim=SIM, checkpoint_dir=ckpt,
                                report=report, wait=wait)
    return out, reports


def test_values_are_a_deterministic_function_of_params_and_epoch(tmp_path):
    a, ra = _run(tmp_path / "a")
    b, rb = _run(tmp_path / "b")
    assert ra == rb and a.best_value == b.best_value and a.stopped == "completed"
    other = sim_mod.epoch_value(PARAMS | {"lr": 9e-4}, SPACE, 4, SIM)
    assert other != sim_mod.epoch_value(PARAMS, SPACE, 4, SIM)
    # (Whether it learns depends on the recorded shape drawn: see the family tests below.)


def test_durations_are_seeded_and_heavy_tailed(tmp_path):
    draws = [sim_mod.epoch_seconds({"i": i}, 0, SIM) for i in range(4000)]
    assert draws == [sim_mod.epoch_seconds({"i": i}, 0, SIM) for i in range(4000)]
    assert statistics.fmean(draws) == pytest.approx(0.5, rel=0.1)
    assert max(draws) > 4 * statistics.median(draws)


def test_pruning_stops_early(tmp_path):
    out, reports = _run(tmp_path, prune_at=1)
    assert out.stopped == "pruned" and out.epochs_run == 2 and len(reports) == 2


def test_preempted_run_resumes_after_its_last_checkpoint(tmp_path):
    with pytest.raises(Preempted):
        _run(tmp_path, stop_at=2)
    out, reports = _run(tmp_path)
    assert out.resumed_from_epoch == 1 and out.epochs_run == 3
    full, full_reports = _run(tmp_path / "fresh")
    assert reports == full_reports and out.best_value == full.best_value


def _rises_late(shape) -> bool:
    """A late bloomer: under half its best through the first quarter, within 10 % of it at
    the end."""
    quarter = max(1, len(shape) // 4)
    return max(shape[:quarter]) < 0.5 and shape[-1] >= 0.9


def test_recorded_family_has_the_curves_that_make_pruning_risky():
    shapes = sim_mod.recorded_shapes()
    assert len(shapes) >= 4 and all(max(s) <= 1.0 for s in shapes)
    drops = [max(a - b for a, b in zip(s[:-1], s[1:], strict=True)) for s in shapes]
    assert sum(d > 0.05 for d in drops) >= 2  # noisy: curves that fall back for an epoch
    assert any(_rises_late(s) for s in shapes)  # late bloomers
    assert any(sim_mod.falls_back(s) for s in shapes)  # divergent runs
    assert any(max(s) == 0 for s in shapes)  # runs that learned nothing
    for path in sorted(sim_mod.CURVES_DIR.glob("*.json")):
        rec = json.loads(path.read_text())
        assert rec["command"].startswith("python -m psy_agents.bench.curves")
        assert rec["date"] and isinstance(rec["seed"], int) and rec["curves"]


def test_a_trial_follows_one_recorded_shape_stretched_over_the_cap():
    flat = SIM | {"noise": 0.0}
    shape = sim_mod.curve_shape(PARAMS, flat)
    assert shape in sim_mod.recorded_shapes()
    q = sim_mod.quality(PARAMS, SPACE, flat["seed"])
    n = len(shape)
    own = [sim_mod.epoch_value(PARAMS, SPACE, e, flat | {"epochs": n}) for e in range(n)]
    assert own == pytest.approx([q * v for v in shape])
    # Over twice the epochs, every second epoch lands on a recorded one.
    twice = [sim_mod.epoch_value(PARAMS, SPACE, e, flat | {"epochs": 2 * n}) for e in range(2 * n)]
    assert twice[1::2] == pytest.approx([q * v for v in shape])


def test_shapes_are_seeded_by_params_and_seed():
    picks = {sim_mod.curve_shape(PARAMS | {"lr": 1e-4 * (1 + i)}, SIM) for i in range(40)}
    assert len(picks) >= 4  # trials draw from the whole family, not one curve
    assert sim_mod.curve_shape(PARAMS, SIM) == sim_mod.curve_shape(dict(PARAMS), dict(SIM))
    configs = [PARAMS | {"lr": 1e-4 * (1 + i)} for i in range(40)]
    assert any(sim_mod.curve_shape(p, SIM) != sim_mod.curve_shape(p, SIM | {"seed": 5})
               for p in configs)  # another seed, another draw


def test_smooth_curve_is_the_single_exponential(tmp_path):
    smooth = SIM | {"curve": "smooth", "noise": 0.0}
    q = sim_mod.quality(PARAMS, SPACE, SIM["seed"])
    values = [sim_mod.epoch_value(PARAMS, SPACE, e, smooth) for e in range(6)]
    assert values == pytest.approx([q * (1 - 0.8 * math.exp(-(e + 1) / 2)) for e in range(6)])


def test_patience_ends_a_trial_after_epochs_without_a_new_best(tmp_path, monkeypatch):
    monkeypatch.setattr(sim_mod, "curve_shape", lambda *_: (0.5, 1.0, 0.9, 0.8, 0.7, 0.6))
    sim = SIM | {"noise": 0.0, "epochs": 6, "patience": 2}
    out = sim_mod.run_simulated(PARAMS, SPACE, epochs=6, sim=sim, checkpoint_dir=tmp_path,
                                report=lambda *_: False, wait=lambda _: False)
    # Best after epoch 1; epochs 2 and 3 bring nothing: stopped before epoch 4.
    assert (out.stopped, out.epochs_run) == ("early_stopped", 4)
    out = sim_mod.run_simulated(PARAMS, SPACE, epochs=6, sim=sim | {"patience": 0},
                                checkpoint_dir=tmp_path / "off", report=lambda *_: False,
                                wait=lambda _: False)
    assert (out.stopped, out.epochs_run) == ("completed", 6)
