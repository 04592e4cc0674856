"""Which epoch's model `run_training` writes to output_dir: the best, or (refit) the last."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from psy_agents.agents import registry
from psy_agents.bench.plan import CHECKPOINT_BYTES_PER_PARAM, MODEL_BYTES_PER_PARAM, tiny_params
from psy_agents.training import checkpoint as ckpt
from psy_agents.training.checkpoint import load_model
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training
from tests.training.helpers import HandData, sleep_pairs

DATA = HandData(train=sleep_pairs(24, 0), val=sleep_pairs(8, 1), test=())
# The values the agent's objective gives epochs 0, 1, 2: the best epoch is neither the
# first nor the last, so keeping either of those instead is told apart from keeping it.
VALUES = (0.2, 0.6, 0.4)


def _saved_epochs(monkeypatch, hand_tiny, tmp_path, keep: str):
    """Train 3 epochs with the criteria agent's objective scripted to ``VALUES``; return
    (what was written, in order: "model" / "checkpoint"; the weights at the end of each
    epoch, as the checkpoint got them; the result)."""
    events: list[str] = []
    weights: list[dict] = []
    epochs: list[int] = []
    real_model, real_checkpoint = ckpt.save_model, ckpt.write_checkpoint

    def spy_model(*args, **kwargs):
        events.append("model")
        return real_model(*args, **kwargs)

    def spy_checkpoint(directory, payload):  # the state as the epoch ended, copied then
        events.append("checkpoint")
        weights.append(dict(payload["model"]))
        return real_checkpoint(directory, payload)

    def scripted(metrics):  # the epoch was really trained and evaluated
        epochs.append(len(epochs))
        return VALUES[epochs[-1]]

    monkeypatch.setattr(ckpt, "save_model", spy_model)
    monkeypatch.setattr(ckpt, "write_checkpoint", spy_checkpoint)
    monkeypatch.setitem(registry.AGENTS, "criteria",
                        dataclasses.replace(registry.AGENTS["criteria"], objective=scripted))
    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16,
                      epochs=3, patience=3, lr=2e-3, batch_size=16)
    res = run_training(cfg, DATA, output_dir=tmp_path / keep, keep=keep,
                       checkpoint_dir=tmp_path / "ckpt")
    return events, weights, res


def _differing(kept, at_epoch) -> list[str]:
    """The names of the tensors of ``kept`` that differ from the weights ``at_epoch``."""
    assert kept.keys() == at_epoch.keys()
    return [k for k in kept if not torch.equal(kept[k], at_epoch[k])]


def test_keep_last_keeps_the_last_epochs_weights(monkeypatch, hand_tiny, tmp_path):
    events, weights, res = _saved_epochs(monkeypatch, hand_tiny, tmp_path, "last")
    assert events == ["model", "checkpoint"] * 3 and res.epochs_run == 3
    kept = load_model(tmp_path / "last" / "model")[2].state_dict()
    assert _differing(kept, weights[-1]) == [] and _differing(kept, weights[1])


def test_keep_best_keeps_the_best_epochs_weights_before_the_checkpoint(monkeypatch, hand_tiny,
                                                                       tmp_path):
    events, weights, res = _saved_epochs(monkeypatch, hand_tiny, tmp_path, "best")
    assert [h.value for h in res.history] == list(VALUES)
    assert (res.best_epoch, res.best_value) == (1, 0.6)
    # The kept model is the best epoch's, bit for bit: not the first's, not the last's.
    model = load_model(tmp_path / "best" / "model")[2]
    kept = model.state_dict()
    assert _differing(kept, weights[1]) == []
    assert _differing(kept, weights[0]) and _differing(kept, weights[2])
    # Written on improvement only (epochs 0 and 1), each model on disk before the
    # checkpoint that names it the best.
    assert events == ["model", "checkpoint", "model", "checkpoint", "checkpoint"]
    # The sizes `launch plan` assumes: checkpoint ~12 bytes/param, model ~4 bytes/param.
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
