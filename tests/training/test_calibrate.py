"""Decision thresholds chosen on val (psy_agents.training.calibrate), on hand-built scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psy_agents.errors import ConfigError
from psy_agents.training.calibrate import (
    SHRINK_POSITIVES,
    Decision,
    best_threshold,
    choose_margin,
    decision_from_metrics,
    decision_metrics,
    fit_decision,
)
from psy_agents.training.metrics import symptom_metrics


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _low_scores(rng, n_pos: int, n_neg: int, pos_at: float, neg_at: float):
    """A model that ranks well but sits far below 0.5: positives near ``pos_at``."""
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    p = np.r_[rng.uniform(pos_at - 0.02, pos_at + 0.02, n_pos),
              rng.uniform(neg_at - 0.02, neg_at + 0.02, n_neg)]
    return y, p


def test_best_threshold_separates_a_model_that_sits_below_one_half():
    y, p = _low_scores(np.random.default_rng(0), 8, 40, pos_at=0.2, neg_at=0.05)
    t = best_threshold(y, p)
    assert 0.07 < t <= p[y == 1].min()
    assert not np.any(p >= 0.5)  # at 0.5 the symptom would score F1 0
    assert best_threshold(np.zeros(5, int), np.linspace(0, 1, 5)) == 0.5  # nothing to find


def test_global_threshold_rescues_every_low_symptom_and_fixed_keeps_one_half():
    rng = np.random.default_rng(1)
    sym, ys, ps = [], [], []
    for name, pos_at in (("A", 0.25), ("B", 0.3)):
        y, p = _low_scores(rng, 10, 30, pos_at=pos_at, neg_at=0.08)
        sym += [name] * len(y)
        ys.append(y)
        ps.append(p)
    y, p = np.concatenate(ys), np.concatenate(ps)
    fixed = fit_decision("fixed", sym, y, p)
    assert fixed.thresholds == {"A": 0.5, "B": 0.5}
    assert decision_metrics(fixed, sym, y, p)["symptom_macro_f1"] == 0.0
    glob = fit_decision("global", sym, y, p)
    assert glob.thresholds["A"] == glob.thresholds["B"] == glob.default
    assert 0.1 < glob.default <= p[(np.asarray(sym) == "A") & (y == 1)].min()
    assert decision_metrics(glob, sym, y, p)["symptom_macro_f1"] == 1.0


def test_shrunk_thresholds_move_toward_a_symptoms_own_by_its_positives():
    rng = np.random.default_rng(2)
    sym, ys, ps = [], [], []
    for name, n_pos, pos_at in (("RARE", 5, 0.6), ("COMMON", 100, 0.3), ("MID", 40, 0.3)):
        y, p = _low_scores(rng, n_pos, 200, pos_at=pos_at, neg_at=0.1)
        sym += [name] * len(y)
        ys.append(y)
        ps.append(p)
    y, p = np.concatenate(ys), np.concatenate(ps)
    glob = fit_decision("global", sym, y, p).default
    shrunk = fit_decision("shrunk", sym, y, p)
    assert shrunk.default == glob
    for name, n_pos in (("RARE", 5), ("COMMON", 100)):
        m = np.asarray(sym) == name
        own = best_threshold(y[m], p[m], prefer=glob)
        w = n_pos / (n_pos + SHRINK_POSITIVES)
        want = 1 / (1 + math.exp(-(w * _logit(own) + (1 - w) * _logit(glob))))
        assert shrunk.thresholds[name] == pytest.approx(want)
    # RARE's own cut-off is far above the global one; with 5 positives it moves a third
    rare_own = best_threshold(y[np.asarray(sym) == "RARE"], p[np.asarray(sym) == "RARE"])
    moved = (_logit(shrunk.thresholds["RARE"]) - _logit(glob)) / (_logit(rare_own) - _logit(glob))
    assert moved == pytest.approx(5 / 15)


def test_fixed_decisions_match_the_symptom_metrics_and_a_decision_round_trips(tmp_path):
    rng = np.random.default_rng(3)
    sym = list(rng.choice(["A", "B", "C"], 90))
    y, p = rng.integers(0, 2, 90), rng.uniform(0, 1, 90)
    ours = decision_metrics(Decision("fixed", 0.5, {}), sym, y, p)
    ref = symptom_metrics(sym, y, p, 0.5)
    assert {k: v for k, v in ours.items() if k.startswith("f1/") or k == "symptom_macro_f1"} \
        == {k: v for k, v in ref.items() if k.startswith("f1/") or k == "symptom_macro_f1"}
    shrunk = fit_decision("shrunk", sym, y, p)
    shrunk = Decision(shrunk.method, shrunk.default, shrunk.thresholds, margin=1.5)
    shrunk.save(tmp_path)
    assert Decision.load(tmp_path, 0.5) == shrunk
    assert Decision.load(tmp_path / "elsewhere", 0.5) is None
    recorded = {**decision_metrics(shrunk, sym, y, p), "no_answer_margin": 1.5}
    assert decision_from_metrics(recorded, "shrunk") == shrunk


def test_an_unknown_method_is_one_config_error():
    with pytest.raises(ConfigError, match="unknown decision method 'median'.*fixed, global, shrunk"):
        fit_decision("median", ["A"], [1], [0.3])


def test_the_margin_is_the_best_of_the_val_margins_and_zero_wins_ties():
    margins = np.array([-3.0, -1.0, 0.5, 2.0, np.inf * -1])
    # candidates: the lowest margin, the middle of each gap between two, and 0
    assert choose_margin(margins, lambda m: -abs(m - 1.2)) == 1.25
    assert choose_margin(margins, lambda m: 1.0) == 0.0


def test_the_f1_curve_is_binary_f1_at_every_threshold():
    from psy_agents.training.calibrate import candidates, f1_curve
    from psy_agents.training.metrics import binary_f1

    rng = np.random.default_rng(4)
    for n in (1, 7, 60):
        y, p = rng.integers(0, 2, n), rng.choice([0.1, 0.3, 0.5, 0.7], n)  # ties
        grid = np.r_[candidates(p), 0.0, 1.0]
        f1, defined = f1_curve(y, p, grid)
        for t, got, ok in zip(grid, f1, defined, strict=True):
            want = binary_f1(y, p >= t)
            assert (want is None) == (not ok) and (want is None or got == pytest.approx(want))


def _two_symptoms(rng, pos_at, neg_at, n=60):
    sym, ys, ps, posts = [], [], [], []
    for name in ("A", "B"):
        y, p = _low_scores(rng, n // 3, n - n // 3, pos_at=pos_at, neg_at=neg_at)
        sym += [name] * n
        ys.append(y)
        ps.append(p)
        posts += [f"post{i}" for i in range(n)]  # every post has both symptoms
    return sym, np.concatenate(ys), np.concatenate(ps), posts


def test_auto_keeps_one_half_for_a_calibrated_model_and_tunes_a_model_far_from_it():
    from psy_agents.training.calibrate import cv_scores

    rng = np.random.default_rng(5)
    calibrated = _two_symptoms(rng, pos_at=0.8, neg_at=0.2)
    scores = cv_scores(*calibrated)
    assert scores == {"fixed": 1.0, "global": 1.0, "shrunk": 1.0}
    auto = fit_decision("auto", *calibrated[:3], posts=calibrated[3])
    assert auto.method == "auto" and auto.thresholds == {"A": 0.5, "B": 0.5}  # tie: simplest

    low = _two_symptoms(rng, pos_at=0.2, neg_at=0.05)
    scores = cv_scores(*low)
    assert scores["fixed"] == 0.0 and scores["global"] == 1.0
    auto = fit_decision("auto", *low[:3], posts=low[3])
    assert auto.thresholds == fit_decision("global", *low[:3]).thresholds


def test_a_posts_pairs_share_a_fold_whatever_their_order():
    from psy_agents.training.calibrate import CV_FOLDS, folds_of

    posts = [f"p{i % 23}" for i in range(23 * 9)]  # 23 posts x 9 symptoms
    fold = folds_of(posts)
    by_post = {}
    for post, k in zip(posts, fold, strict=True):
        by_post.setdefault(post, set()).add(int(k))
    assert all(len(ks) == 1 for ks in by_post.values())
    assert sorted(np.bincount([next(iter(k)) for k in by_post.values()])) == [4, 4, 5, 5, 5]
    shuffled = list(reversed(posts))
    assert {p: int(k) for p, k in zip(shuffled, folds_of(shuffled), strict=True)} == \
        {p: next(iter(k)) for p, k in by_post.items()}
    assert CV_FOLDS == 5
