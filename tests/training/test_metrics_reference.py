"""Our metrics against independent references: scikit-learn for symptom F1 and AUROC (on
random inputs, ties and one-class symptoms included), and SQuAD v1.1 values computed by hand
for span F1 / exact match."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import f1_score, roc_auc_score

from psy_agents.training.metrics import (
    answer_tokens,
    auroc,
    best_match,
    binary_f1,
    span_metrics,
    symptom_metrics,
    token_f1,
)

PROPERTY = settings(max_examples=200, deadline=None)
# Few distinct scores, so ties between a positive and a negative are common.
SCORES = st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9])
THRESHOLD = 0.5  # a score equal to it is a predicted positive (``probs >= threshold``)


def sk_auroc(y_true, scores) -> float | None:
    """scikit-learn's AUROC, None where it is undefined (one class): older releases raise
    ValueError, newer ones warn and return nan."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedMetricWarning)
        try:
            return float(roc_auc_score(y_true, scores))
        except (ValueError, UndefinedMetricWarning):
            return None


def same(ours: float | None, ref: float | None) -> bool:
    """Ours equals the reference, both undefined (None) included."""
    return ours == (None if ref is None else pytest.approx(ref))


@st.composite
def symptom_table(draw):
    """Labels and scores of ``posts`` x ``symptoms`` pairs (every post asked every symptom).
    At least two symptoms: scikit-learn reads a one-column table as binary classes, not as
    one label (one symptom is :func:`test_binary_f1_equals_sklearn`)."""
    posts = draw(st.integers(1, 12))
    symptoms = draw(st.integers(2, 4))
    cells = st.lists(st.tuples(st.booleans(), SCORES), min_size=posts * symptoms,
                     max_size=posts * symptoms)
    table = draw(cells)
    y = np.array([c[0] for c in table], dtype=int).reshape(posts, symptoms)
    s = np.array([c[1] for c in table]).reshape(posts, symptoms)
    return y, s


def _flatten(y: np.ndarray, s: np.ndarray) -> tuple[list[str], list[int], list[float]]:
    names = [f"S{j}" for j in range(y.shape[1])]
    return ([names[j] for i in range(y.shape[0]) for j in range(y.shape[1])],
            y.ravel().tolist(), s.ravel().tolist())


# -- symptom F1 ----------------------------------------------------------------------------

@PROPERTY
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_binary_f1_equals_sklearn(pairs):
    y_true = [int(t) for t, _ in pairs]
    y_pred = [int(p) for _, p in pairs]
    ref = f1_score(y_true, y_pred, zero_division=np.nan)
    # no gold and no predicted positive: undefined in both (sklearn's nan, our None)
    assert same(binary_f1(y_true, y_pred), None if np.isnan(ref) else ref)


@PROPERTY
@given(symptom_table())
def test_symptom_metrics_equal_sklearn_multilabel_macro(table):
    """Per-symptom F1 and AUROC, and their macro means, against scikit-learn on a
    multilabel table."""
    y, s = table
    m = symptom_metrics(*_flatten(y, s), threshold=THRESHOLD)
    pred = (s >= THRESHOLD).astype(int)
    for j, ref in enumerate(f1_score(y, pred, average=None, zero_division=np.nan)):
        assert same(m.get(f"f1/S{j}"), None if np.isnan(ref) else ref)
    macro = f1_score(y, pred, average="macro", zero_division=np.nan)
    # sklearn's nan (no symptom counts) is our documented 0.0; the rest must agree.
    assert m["symptom_macro_f1"] == pytest.approx(0.0 if np.isnan(macro) else macro)
    refs = [sk_auroc(y[:, j], s[:, j]) for j in range(y.shape[1])]
    for j, ref in enumerate(refs):
        assert same(m.get(f"auroc/S{j}"), ref)
    defined = [r for r in refs if r is not None]
    # No symptom with both classes: our documented chance level 0.5 (sklearn has none).
    assert m["macro_auroc"] == pytest.approx(np.mean(defined) if defined else 0.5)


def test_no_positive_anywhere_is_zero_macro_f1_where_sklearn_says_nan():
    """All-negative labels and predictions: sklearn has nothing to average (nan); ours is
    0.0 by contract, so an all-absent predictor never scores above a real one."""
    y = np.zeros((5, 3), dtype=int)
    s = np.full((5, 3), 0.1)
    assert np.isnan(f1_score(y, (s >= THRESHOLD).astype(int), average="macro",
                             zero_division=np.nan))
    m = symptom_metrics(*_flatten(y, s), threshold=THRESHOLD)
    assert m["symptom_macro_f1"] == 0.0 and not any(k.startswith("f1/") for k in m)


def test_all_positive_labels_agree_with_sklearn():
    y = np.ones((4, 2), dtype=int)
    s = np.array([[0.9, 0.1], [0.5, 0.1], [0.3, 0.7], [0.1, 0.1]])
    pred = (s >= THRESHOLD).astype(int)
    m = symptom_metrics(*_flatten(y, s), threshold=THRESHOLD)
    assert m["f1/S0"] == pytest.approx(f1_score(y[:, 0], pred[:, 0])) == pytest.approx(2 / 3)
    assert m["symptom_macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    # AUROC is undefined for one class in both: no per-symptom key, the chance level 0.5.
    assert sk_auroc(y[:, 0], s[:, 0]) is None
    assert not any(k.startswith("auroc/") for k in m) and m["macro_auroc"] == 0.5


# -- AUROC ---------------------------------------------------------------------------------

@PROPERTY
@given(st.lists(st.tuples(st.booleans(), SCORES), min_size=1, max_size=40))
def test_auroc_equals_sklearn_with_ties(pairs):
    y_true = [int(t) for t, _ in pairs]
    scores = [s for _, s in pairs]
    # one class only (all negative or all positive): undefined in both
    assert same(auroc(y_true, scores), sk_auroc(y_true, scores))


def test_auroc_of_one_class_is_undefined_as_in_sklearn():
    for y in ([0, 0, 0], [1, 1, 1]):
        assert auroc(y, [0.1, 0.5, 0.5]) is None
        assert sk_auroc(y, [0.1, 0.5, 0.5]) is None


# -- span F1 / EM: SQuAD v1.1 values computed by hand ---------------------------------------

SQUAD_CASES = [
    # (prediction, gold, token F1, exact match, what the case checks)
    ("i feel so tired all the time", "I feel so tired all the time.", 1.0, 1.0,
     "case and a final full stop"),
    ("the cat sat", "A cat sat", 1.0, 1.0, "articles a/the dropped"),
    ("An apple!", "apple", 1.0, 1.0, "article 'an' and punctuation"),
    ("  i   can't\tsleep \n", "I can't sleep", 1.0, 1.0, "runs of whitespace"),
    ("can't", "cant", 1.0, 1.0, "punctuation deleted inside a word, not split on"),
    ("well-being", "well being", 0.0, 0.0, "'wellbeing' is one token, not two"),
    ("another day", "an other day", 0.5, 0.0, "'an' inside a word is kept: 1 of 2 each way"),
    ("happy days", "sad nights", 0.0, 0.0, "no overlap"),
    ("I cannot sleep at night", "I cannot sleep", 0.75, 0.0, "P 3/5, R 3/3"),
    ("sleep", "I cannot sleep at night", 1 / 3, 0.0, "P 1/1, R 1/5"),
    ("so so tired", "so tired", 0.8, 0.0, "a repeated token counts once per gold: P 2/3"),
    ("tired tired", "tired tired and sad", 2 / 3, 0.0, "repeats on both sides: P 2/2, R 2/4"),
    ("", "I am tired", 0.0, 0.0, "empty prediction"),
    ("...", "tired", 0.0, 0.0, "a prediction with no token after normalization"),
    ("The.", "an!", 1.0, 1.0, "both empty after normalization: SQuAD scores them equal"),
]


@pytest.mark.parametrize(("pred", "gold", "f1", "em", "why"), SQUAD_CASES,
                         ids=[c[4] for c in SQUAD_CASES])
def test_span_f1_and_em_equal_hand_computed_squad_values(pred, gold, f1, em, why):
    assert token_f1(pred, gold) == pytest.approx(f1)
    assert best_match(pred, [gold]) == (pytest.approx(f1), em)


def test_answer_tokens_follow_the_squad_rules():
    assert answer_tokens(" The  Cat's\tWELL-being, an apple; a theme! ") == [
        "cats", "wellbeing", "apple", "theme"]


def test_best_match_takes_the_best_gold_sentence_of_the_pair():
    golds = ["nothing here", "so tired all the time", "I can't sleep."]
    assert best_match("i cant sleep", golds) == (1.0, 1.0)
    # F1 is the max over golds (the second, "so tired all time": P 2/2, R 2/4 -> 2/3);
    # EM needs one gold equal.
    assert best_match("so tired", golds) == (pytest.approx(2 / 3), 0.0)
    assert best_match(None, golds) == (0.0, 0.0)
    # "The time." is [time]: P 1/1, R 1/4 against the second gold -> 0.4.
    m = span_metrics(["The time.", "so tired", None], [golds, golds, golds], [])
    assert m == {"span_f1": pytest.approx((0.4 + 2 / 3 + 0) / 3), "span_em": 0.0}
