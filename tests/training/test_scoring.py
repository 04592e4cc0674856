"""A saved model is scored at the decisions saved with it (decision.json), chosen on val
when it was trained: `launch eval` and the refit read them, and never choose on the split
they score."""

from __future__ import annotations

import json

import numpy as np

from psy_agents.training.calibrate import DECISION_FILE, DEFAULT_METHOD, Decision
from psy_agents.training.checkpoint import MODEL_DIR
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training
from psy_agents.training.scoring import score_model
from tests.training.helpers import SYMPTOM, HandData, sleep_pairs

DATA = HandData(train=sleep_pairs(24, 0), val=sleep_pairs(12, 1), test=sleep_pairs(12, 2))


def test_a_saved_model_is_scored_at_its_saved_decision(hand_tiny, tmp_path):
    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16,
                      lr=2e-3, epochs=2, patience=2, batch_size=8)
    res = run_training(cfg, DATA, output_dir=tmp_path)
    model = tmp_path / MODEL_DIR
    saved = json.loads((model / DECISION_FILE).read_text())
    # the best epoch's val decision is the one saved
    assert saved["method"] == DEFAULT_METHOD
    assert saved["thresholds"][SYMPTOM] == res.metrics[f"threshold/{SYMPTOM}"]

    test = score_model(model, DATA, "test", cache_dir=None)
    assert test.decision_saved and test.decision == Decision.load(model, 0.5)
    assert test.metrics[f"threshold/{SYMPTOM}"] == saved["thresholds"][SYMPTOM]

    positives = np.mean([p.label for p in DATA.test])
    for threshold, f1 in ((1.0 + 1e-9, 0.0), (0.0, 2 * positives / (1 + positives))):
        Decision("shrunk", threshold, {SYMPTOM: threshold}).save(model)
        moved = score_model(model, DATA, "test", cache_dir=None)
        assert moved.metrics[f"f1/{SYMPTOM}"] == f1
        # the fixed-threshold figures and the scores do not move with the decision
        assert moved.metrics[f"fixed/f1/{SYMPTOM}"] == test.metrics[f"fixed/f1/{SYMPTOM}"]
        assert moved.metrics[f"auroc/{SYMPTOM}"] == test.metrics[f"auroc/{SYMPTOM}"]

    (model / DECISION_FILE).unlink()  # a model saved before decisions were
    old = score_model(model, DATA, "test", cache_dir=None)
    assert not old.decision_saved and old.decision.method == "fixed"
    assert old.metrics[f"f1/{SYMPTOM}"] == test.metrics[f"fixed/f1/{SYMPTOM}"]


def test_a_refit_chooses_its_decision_on_val_not_on_the_split_it_scores(hand_tiny, tmp_path):
    """eval_split="test" (the refit): the thresholds are val's, applied to test."""
    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16,
                      lr=2e-3, epochs=1, patience=1, batch_size=8)
    on_val = run_training(cfg, DATA, eval_split="val")
    on_test = run_training(cfg, DATA, eval_split="test", output_dir=tmp_path, keep="last")
    key = f"threshold/{SYMPTOM}"
    assert on_test.metrics[key] == on_val.metrics[key]  # same seed, same model, val's cut
    saved = Decision.load(tmp_path / MODEL_DIR, 0.5)
    assert saved.thresholds[SYMPTOM] == on_val.metrics[key]
