"""The simulated benchmark/test workload: deterministic, resumable, preemptible."""

from __future__ import annotations

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
    assert ra[-1][1] > ra[0][1]  # it learns: later epochs score higher


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
