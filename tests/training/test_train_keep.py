"""Which epoch's model `run_training` writes to output_dir: the best, or (refit) the last."""

from __future__ import annotations

import pytest

from psy_agents.bench.plan import CHECKPOINT_BYTES_PER_PARAM, MODEL_BYTES_PER_PARAM, tiny_params
from psy_agents.training import checkpoint as ckpt
from psy_agents.training.checkpoint import load_model
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training
from tests.training.helpers import HandData, sleep_pairs

DATA = HandData(train=sleep_pairs(24, 0), val=sleep_pairs(8, 1), test=())


def _saved_epochs(monkeypatch, hand_tiny, tmp_path, keep: str, events=None):
    """(one entry per model saved, the result); ``events`` gets "model"/"checkpoint" in
    the order they were written (with a checkpoint folder then)."""
    calls: list[int] = []
    real_model, real_checkpoint = ckpt.save_model, ckpt.save_checkpoint

    def spy(*args, **kwargs):
        calls.append(len(calls))
        if events is not None:
            events.append("model")
        return real_model(*args, **kwargs)

    def spy_checkpoint(*args, **kwargs):
        events.append("checkpoint")
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_model", spy)
    monkeypatch.setattr(ckpt, "save_checkpoint", spy_checkpoint)
    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16,
                      epochs=3, patience=3, lr=2e-3, batch_size=16)
    checkpoints = tmp_path / "ckpt" if events is not None else None
    return calls, run_training(cfg, DATA, output_dir=tmp_path / keep, keep=keep,
                               checkpoint_dir=checkpoints)


def test_keep_last_writes_every_epoch_so_the_final_one_stays(monkeypatch, hand_tiny, tmp_path):
    calls, res = _saved_epochs(monkeypatch, hand_tiny, tmp_path, "last")
    assert len(calls) == res.epochs_run == 3
    assert (tmp_path / "last" / "model").is_dir()


def test_keep_best_writes_only_on_improvement_before_the_checkpoint(monkeypatch, hand_tiny,
                                                                    tmp_path):
    events: list[str] = []
    calls, res = _saved_epochs(monkeypatch, hand_tiny, tmp_path, "best", events)
    values = [h.value for h in res.history]
    improved = [v > max(values[:i], default=float("-inf")) for i, v in enumerate(values)]
    assert len(calls) == sum(improved)
    # An improved epoch's model is on disk before the checkpoint that names it the best.
    assert events == [e for up in improved for e in (["model"] if up else []) + ["checkpoint"]]
    # The sizes `launch plan` assumes: checkpoint ~12 bytes/param, model ~4 bytes/param.
    model = load_model(tmp_path / "best" / "model")[2]
    params = sum(p.numel() for p in model.parameters())
    encoder = model.encoders[0]
    assert sum(p.numel() for p in encoder.parameters()) == \
        tiny_params(encoder.config.vocab_size)  # the count `launch plan` uses for tiny
    checkpoint = (tmp_path / "ckpt" / ckpt.CHECKPOINT).stat().st_size
    saved = sum(f.stat().st_size for f in (tmp_path / "best" / "model").rglob("*") if f.is_file())
    assert checkpoint == pytest.approx(params * CHECKPOINT_BYTES_PER_PARAM, rel=0.05)
    assert saved == pytest.approx(params * MODEL_BYTES_PER_PARAM, rel=0.1)


def test_keep_rejects_other_values(hand_tiny):
    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16, epochs=1)
    with pytest.raises(ValueError, match="`keep` is 'middle'"):
        run_training(cfg, DATA, keep="middle")
