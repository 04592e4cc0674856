"""Which epoch's model `run_training` writes to output_dir: the best, or (refit) the last."""

from __future__ import annotations

import pytest

from psy_agents.training import checkpoint as ckpt
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training
from tests.training.helpers import HandData, sleep_pairs

DATA = HandData(train=sleep_pairs(24, 0), val=sleep_pairs(8, 1), test=())


def _saved_epochs(monkeypatch, hand_tiny, tmp_path, keep: str) -> tuple[list[int], object]:
    calls: list[int] = []
    real = ckpt.save_model

    def spy(*args, **kwargs):
        calls.append(len(calls))
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_model", spy)
    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16,
                      epochs=3, patience=3, lr=2e-3, batch_size=16)
    return calls, run_training(cfg, DATA, output_dir=tmp_path / keep, keep=keep)


def test_keep_last_writes_every_epoch_so_the_final_one_stays(monkeypatch, hand_tiny, tmp_path):
    calls, res = _saved_epochs(monkeypatch, hand_tiny, tmp_path, "last")
    assert len(calls) == res.epochs_run == 3
    assert (tmp_path / "last" / "model").is_dir()


def test_keep_best_writes_only_on_improvement(monkeypatch, hand_tiny, tmp_path):
    calls, res = _saved_epochs(monkeypatch, hand_tiny, tmp_path, "best")
    values = [h.value for h in res.history]
    improvements = sum(v > max(values[:i], default=float("-inf")) for i, v in enumerate(values))
    assert len(calls) == improvements


def test_keep_rejects_other_values(hand_tiny):
    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16, epochs=1)
    with pytest.raises(ValueError, match="`keep` is 'middle'"):
        run_training(cfg, DATA, keep="middle")
