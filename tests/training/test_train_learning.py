"""Each agent really learns: its objective ends far above the trivial baseline.

Data: hand-made SLEEP_ISSUES posts (tests/training/helpers.py), evidence anywhere in a post
of up to ~15 sentences, validation posts up to ~45 sentences so evidence often lies past
the first 64-token window. Trivial predictors on this val set (two thirds of the pairs
show the symptom): all absent macro-F1 0.0, all present 0.8; never answering span F1 0.0,
always answering no-answer accuracy 0.0; each misses a floor below. Measured (2-core CPU,
seed 0, 10 epochs): criteria macro-F1 1.0, evidence span F1 0.99, share 0.99/1.0, joint
0.97/1.0.
"""

from __future__ import annotations

import pytest

from psy_agents.training.calibrate import Decision
from psy_agents.training.checkpoint import load_model
from psy_agents.training.config import TrainConfig
from psy_agents.training.evaluate import pair_spans, predict_windows
from psy_agents.training.run import prepare, run_training
from tests.training.helpers import HandData, passing_trivial, sleep_pairs, trivial_baselines

DATA = HandData(train=sleep_pairs(90, 0), val=sleep_pairs(30, 1, max_before=40), test=())


def _cfg(agent: str, source: str, **kw) -> TrainConfig:
    base = {"agent": agent, "backbone": source, "max_length": 64, "stride": 16, "lr": 2e-3,
            "epochs": 10, "patience": 10, "dropout": 0.0, "batch_size": 16,
            "warmup_ratio": 0.05}
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow
@pytest.mark.parametrize(("agent", "floor"), [
    ("criteria", {"symptom_macro_f1": 0.9}),
    ("evidence", {"span_f1": 0.8, "no_answer_acc": 0.8}),
    ("share", {"symptom_macro_f1": 0.85, "span_f1": 0.7}),
    ("joint", {"symptom_macro_f1": 0.85, "span_f1": 0.7}),
])
def test_agent_beats_the_trivial_baseline(agent, floor, hand_tiny):
    assert passing_trivial(floor, trivial_baselines(DATA.val)) == []
    res = run_training(_cfg(agent, hand_tiny), DATA)
    for key, minimum in floor.items():
        assert res.metrics[key] >= minimum, (key, res.metrics)
    assert res.history[-1].train_loss < res.history[0].train_loss / 3


@pytest.mark.slow
def test_evidence_past_the_first_window_is_found(hand_tiny, tmp_path):
    cfg = _cfg("evidence", hand_tiny)
    run_training(cfg, DATA, output_dir=tmp_path)
    _, saved_cfg, model = load_model(tmp_path / "model")
    ws = prepare(saved_cfg, DATA).eval_ws
    first_window = {}
    for w, p in enumerate(ws.pair_index):
        first_window.setdefault(int(p), w)
    late = sorted({int(p) for w, p in enumerate(ws.pair_index)
                   if ws.start[w] > 0 and w - first_window[int(p)] >= 2})
    assert len(late) >= 5  # evidence in the third window or later
    pred = predict_windows(model, ws, heads=("span",), batch_size=32, pad_id=0, device="cpu",
                           bf16=False, max_answer=saved_cfg.max_answer_tokens)
    margins, texts = pair_spans(DATA.val, ws, pred)
    # answered where the model's saved no-answer margin (chosen on val) says so
    cut = Decision.load(tmp_path / "model", 0.5).margin
    answers = [t if m > cut else None for m, t in zip(margins, texts, strict=True)]
    right = [answers[p] == DATA.val[p].spans[0].sentence for p in late]
    # Measured 13-15 of 19 exactly right (0.68-0.79) depending on test order; trivial 0.
    assert sum(right) >= 0.6 * len(late), list(zip(late, answers, strict=False))
