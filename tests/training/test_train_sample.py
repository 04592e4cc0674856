"""Each agent learns on the real sample (data/sample, split seed 13): train on train, score val.

The tiny backbone (WordPiece vocabulary + randomly initialized BERT, hidden 128, 2 layers) and
the windows are built once per session and shared by every test. The trivial baselines are
computed on the same val pairs: predicting every symptom absent gives macro-F1 0 and AUROC
0.5; answering "no answer" everywhere gives span F1 0.

Measured on the 2-core CPU box (seed 0, settings below; see each test for its figures).
These are far from the issue's targets (macro-F1 >= 0.8, span F1 >= 0.7): the tiny model
trained from scratch on ~300 positive pairs reaches val AUROC ~0.72 and stalls there
(a symptom-crossed bag-of-words logistic model reaches AUROC 0.88 on the same windows). The
floors are set a little below what was measured, so a model that stops learning fails.
"""

from __future__ import annotations

import pytest

from psy_agents.training.config import TrainConfig
from psy_agents.training.metrics import span_metrics, symptom_metrics
from psy_agents.training.run import run_training

SETTINGS = {"max_length": 256, "stride": 64, "lr": 2e-3, "batch_size": 32, "dropout": 0.1}


def trivial_baselines(pairs) -> dict[str, float]:
    """All-absent symptom metrics and always-no-answer span metrics on ``pairs``."""
    sym = symptom_metrics([p.symptom for p in pairs], [p.label for p in pairs],
                          [0.0] * len(pairs), threshold=0.5)
    pos = [p for p in pairs if p.label == 1 and p.spans]
    span = span_metrics([None] * len(pos), [[s.sentence for s in p.spans] for p in pos],
                        [False] * sum(p.label == 0 for p in pairs))
    return {**sym, **span}


def _train(agent: str, epochs: int, data):
    cfg = TrainConfig(agent=agent, epochs=epochs, patience=epochs, **SETTINGS)
    return run_training(cfg, data)


def test_trivial_baselines_are_zero(sample_data):
    base = trivial_baselines(sample_data.val)
    assert base["symptom_macro_f1"] == 0.0 and base["macro_auroc"] == 0.5
    assert base["span_f1"] == 0.0 and base["no_answer_acc"] == 1.0


@pytest.mark.slow
def test_criteria_learns_on_the_sample(sample_data):
    """Measured: best val macro-F1 0.31 (h128; 0.26-0.37 over runs), macro AUROC 0.72
    (baseline 0 / 0.5); 8 epochs, ~60-90 s on the loaded box."""
    res = _train("criteria", 8, sample_data)
    assert res.best_value >= 0.15, res.metrics
    assert max(h.metrics["macro_auroc"] for h in res.history) >= 0.65
    assert res.history[-1].train_loss < res.history[0].train_loss


@pytest.mark.slow
def test_evidence_learns_on_the_sample(sample_data):
    """Measured: best val span F1 0.37 in 12 epochs (0.30 with width 64) (baseline 0)."""
    res = _train("evidence", 12, sample_data)
    assert res.best_value >= 0.2, res.metrics
    assert res.history[-1].train_loss < res.history[0].train_loss / 2


@pytest.mark.slow
def test_share_learns_on_the_sample(sample_data):
    """Measured: mean(macro-F1 0.0, span F1 0.24) = 0.12, macro AUROC 0.65 (baseline 0).

    joint (two encoders, twice the cost) is not run on the sample: it took over 3 minutes
    on the loaded box; the hand-made test in test_train_learning.py covers it.
    """
    res = _train("share", 8, sample_data)
    assert res.best_value >= 0.08, res.metrics
    assert res.metrics["span_f1"] >= 0.15
