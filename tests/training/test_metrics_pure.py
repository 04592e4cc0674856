"""The metric helpers on inputs small enough to check by hand."""

from __future__ import annotations

import pytest

from psy_agents.training.metrics import (
    auroc,
    best_match,
    binary_f1,
    span_metrics,
    symptom_metrics,
    token_f1,
)


def test_binary_f1_counts_only_the_positive_class():
    assert binary_f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert binary_f1([0, 0], [0, 0]) is None  # nothing to say about the symptom
    assert binary_f1([0, 0], [1, 0]) == 0.0


def test_auroc_is_the_rank_statistic_with_half_credit_for_ties():
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auroc([1, 1], [0.2, 0.3]) is None


def test_symptom_macro_f1_leaves_out_a_symptom_with_no_gold_and_no_predicted_positive():
    """The README's definition: C has neither, so the mean is over A and B. Counting C as
    0 (scikit-learn's default ``zero_division``) would give 5/9, as 1 would give 8/9."""
    m = symptom_metrics(["A", "A", "B", "B", "C"], [1, 0, 1, 1, 0], [0.9, 0.2, 0.6, 0.1, 0.1],
                        threshold=0.5)
    assert m["f1/A"] == 1.0
    assert m["f1/B"] == pytest.approx(2 / 3)
    assert "f1/C" not in m  # no gold and no predicted positive
    assert m["symptom_macro_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["auroc/A"] == 1.0
    # A false positive on C makes it count, at F1 0.
    m = symptom_metrics(["A", "A", "B", "B", "C"], [1, 0, 1, 1, 0], [0.9, 0.2, 0.6, 0.1, 0.7],
                        threshold=0.5)
    assert m["f1/C"] == 0.0 and m["symptom_macro_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    # Nothing to count at all (no positive anywhere): 0, so the all-absent baseline is 0.
    assert symptom_metrics(["A", "B"], [0, 0], [0.1, 0.2], 0.5)["symptom_macro_f1"] == 0.0


def test_token_f1_and_exact_match_against_the_best_gold_sentence():
    assert token_f1("I cannot sleep", "i cannot sleep at night") == pytest.approx(0.75)
    f1, em = best_match("I cannot sleep", ["nothing here", "i  CANNOT sleep"])
    assert (f1, em) == (1.0, 1.0)
    assert best_match(None, ["x"]) == (0.0, 0.0)


def test_span_metrics_report_no_answer_accuracy_over_negatives():
    m = span_metrics(["a b", None], [["a b"], ["c"]], [False, True, False, False])
    assert m == {"span_f1": 0.5, "span_em": 0.5, "no_answer_acc": 0.75}

