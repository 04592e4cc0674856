"""A run killed after epoch k and resumed from its checkpoint ends exactly like an
uninterrupted run (CPU, fixed seed); pruning, patience and preemption stop it."""

from __future__ import annotations

import pytest

from psy_agents.errors import Preempted
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training
from tests.training.helpers import HandData, sleep_pairs

DATA = HandData(train=sleep_pairs(30, 0), val=sleep_pairs(12, 1), test=())


def _cfg(source: str, **kw) -> TrainConfig:
    return TrainConfig(**{"agent": "share", "backbone": source, "max_length": 64, "stride": 16,
                          "lr": 2e-3, "epochs": 4, "patience": 4, "batch_size": 8,
                          "dropout": 0.1, "neg_ratio": 0.5, **kw})


@pytest.mark.slow
def test_resume_after_a_kill_gives_identical_metrics(hand_tiny, tmp_path):
    cfg = _cfg(hand_tiny)
    straight = run_training(cfg, DATA)

    flag = {"stop": False}

    def after_epoch(record) -> None:  # a preemption signal arriving after epoch 1
        flag["stop"] = record.epoch == 1

    with pytest.raises(Preempted):
        run_training(cfg, DATA, checkpoint_dir=tmp_path, on_epoch=after_epoch,
                     stop_requested=lambda: flag["stop"])
    resumed = run_training(cfg, DATA, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 1
    assert resumed.epochs_run == 2
    assert [h.value for h in resumed.history] == [h.value for h in straight.history]
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in straight.history]
    assert resumed.metrics == straight.metrics
    # A finished checkpoint resumes to the same result without training again.
    again = run_training(cfg, DATA, checkpoint_dir=tmp_path)
    assert again.epochs_run == 0 and again.best_value == straight.best_value


def test_report_prunes_and_patience_stops(hand_tiny):
    seen = []
    res = run_training(_cfg(hand_tiny, epochs=3), DATA,
                       report=lambda v, e: seen.append(e) or e == 1)
    assert res.stopped == "pruned" and seen == [0, 1] and len(res.history) == 2
    res = run_training(_cfg(hand_tiny, epochs=4, patience=1, lr=1e-9), DATA)
    assert res.stopped == "early_stopped" and len(res.history) < 4


def test_a_checkpoint_of_other_settings_is_refused(hand_tiny, tmp_path):
    from psy_agents.errors import ConfigError

    run_training(_cfg(hand_tiny, epochs=1), DATA, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="other settings.*lr"):
        run_training(_cfg(hand_tiny, epochs=1, lr=1e-3), DATA, checkpoint_dir=tmp_path)
