"""``eval_every``: which epochs are evaluated, reported and checkpointed, and what patience
counts; and the opt-in compiled encoder (stage setting ``compile``)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from psy_agents.training import checkpoint as ckpt
from psy_agents.training import loop
from psy_agents.training import run as run_mod
from psy_agents.training.config import TrainConfig
from psy_agents.training.loop import State, evaluates, fit
from psy_agents.training.run import compile_encoders, run_training
from tests.training.helpers import HandData, sleep_pairs

DATA = HandData(train=sleep_pairs(24, 0), val=sleep_pairs(9, 1), test=())


def _cfg(source: str, **kw) -> TrainConfig:
    return TrainConfig(**{"agent": "criteria", "backbone": source, "max_length": 64,
                          "stride": 16, "lr": 2e-3, "epochs": 5, "patience": 5,
                          "batch_size": 8, **kw})


def test_evaluated_epochs_are_every_kth_and_the_last():
    assert [e for e in range(7) if evaluates(e, 3, 6)] == [2, 5, 6]
    assert [e for e in range(4) if evaluates(e, 1, 3)] == [0, 1, 2, 3]
    assert [e for e in range(5) if evaluates(e, 10, 4)] == [4]


def test_only_evaluated_epochs_are_recorded_and_reported_but_every_epoch_is_saved(
        hand_tiny, tmp_path, monkeypatch):
    evaluated: list[int] = []
    real_evaluate = loop.evaluate

    def spy_evaluate(*args, **kwargs):
        evaluated.append(len(evaluated))
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", spy_evaluate)
    written: list[int] = []
    real_write = ckpt.write_checkpoint
    monkeypatch.setattr(ckpt, "write_checkpoint",
                        lambda d, payload: (real_write(d, payload),
                                            written.append(payload["state"]["epoch"])))
    reports: list[int] = []
    res = run_training(_cfg(hand_tiny), DATA, checkpoint_dir=tmp_path, eval_every=2,
                       report=lambda value, epoch: reports.append(epoch) or False)
    assert [h.epoch for h in res.history] == [1, 3, 4] == reports
    assert len(evaluated) == 3
    assert written == [0, 1, 2, 3, 4]  # a resume point after every epoch all the same
    assert res.epochs_run == 5 and res.best_epoch in (1, 3, 4)


def _stub_run(values: dict[int, float], epochs: int, patience: int):
    """A Run whose epochs train nothing and whose evaluation returns ``values[epoch]``."""
    spec = SimpleNamespace(heads=("cls",), objective=lambda m: m["value"])
    cfg = SimpleNamespace(epochs=epochs, patience=patience)
    return loop.Run(spec=spec, cfg=cfg, model=None, optimizer=None, scheduler=None,
                    train_ws=None, allowed=None, eval_pairs=(), eval_ws=None, device="cpu",
                    pad_id=0, pos_weight=1.0)


@pytest.mark.parametrize(("every", "stops_after"), [(1, 4), (2, 5), (3, 5)])
def test_patience_counts_epochs_whatever_eval_every(monkeypatch, every, stops_after):
    """Best at epoch 1, worse ever after, patience 3 epochs: evaluating every epoch stops
    after epoch 4; every 2nd, at the first evaluation 3+ epochs past the best (epoch 5);
    every 3rd, epochs 2 and 5 are evaluated: epoch 2 is the best, then 5 is 3 epochs on."""
    values = {0: 0.5, 1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 5: 0.5, 6: 0.4, 7: 0.3, 8: 0.2}
    if every == 3:
        values[2] = 0.95
    trained: list[int] = []
    current = {"epoch": -1}

    def fake_train(run, epoch, **kwargs):
        trained.append(epoch)
        current["epoch"] = epoch
        return 0.0, 1

    monkeypatch.setattr(loop, "train_epoch", fake_train)
    monkeypatch.setattr(loop, "evaluate",
                        lambda *a, **k: {"value": values[current["epoch"]]})
    state = State()
    stopped = fit(_stub_run(values, epochs=9, patience=3), state, report=None, on_epoch=None,
                  stop_requested=None, save=lambda s, improved: None,
                  make_record=lambda **kw: SimpleNamespace(**kw), eval_every=every)
    assert (stopped, trained[-1]) == ("early_stopped", stops_after)
    assert state.bad_epochs >= 3 and not math.isinf(state.best_value)


def test_a_compiled_encoder_keeps_its_parameter_names_and_computes_the_same(hand_tiny):
    """``Module.compile`` in place: the state dict (checkpoints, saved models) is the plain
    model's, and the compiled forward and backward give the plain model's numbers. The
    ``eager`` backend traces the graph as inductor would but runs it without generating
    code (inductor's C++ compilation takes ~40 s for the tiny encoder on this CPU)."""
    from psy_agents.agents.registry import get_agent

    cfg = _cfg(hand_tiny, dropout=0.0)
    torch.manual_seed(0)
    plain = get_agent("criteria").build_model(cfg, hand_tiny)
    compiled = get_agent("criteria").build_model(cfg, hand_tiny)
    compiled.load_state_dict(plain.state_dict())
    compile_encoders(compiled, backend="eager")
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert all(e._compiled_call_impl is not None for e in compiled.encoders)
    assert plain.encoders[0]._compiled_call_impl is None
    batch = {"input_ids": torch.randint(5, 300, (3, 24)),
             "attention_mask": torch.ones(3, 24, dtype=torch.long),
             "match": torch.zeros(3, 24, dtype=torch.long)}
    grads = []
    for model in (plain, compiled):
        out = model(batch)["cls"]
        out.sum().backward()
        grads.append((out.detach(), model.encoders[0].embeddings.word_embeddings.weight.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_the_compile_setting_reaches_the_model_of_a_run(hand_tiny, monkeypatch):
    compiled: list[object] = []
    monkeypatch.setattr(run_mod, "compile_encoders", lambda model: compiled.append(model))
    run_training(_cfg(hand_tiny, epochs=1), DATA)
    assert compiled == []
    res = run_training(_cfg(hand_tiny, epochs=1), DATA, compile_encoder=True)
    assert len(compiled) == 1 and res.epochs_run == 1
