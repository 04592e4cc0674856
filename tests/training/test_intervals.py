"""Bootstrap intervals over posts (psy_agents.training.intervals), against our own metric
functions: the vectorized replicates equal a plain loop over ``symptom_metrics`` on the same
resampled posts, and the intervals behave as intervals should."""

from __future__ import annotations

import numpy as np
import pytest

from psy_agents.training.intervals import (
    MACRO,
    Interval,
    f1_intervals,
    percentile_interval,
    post_matrix,
    replicate_f1,
    resample_indices,
)
from psy_agents.training.metrics import symptom_metrics

SYMPTOMS = tuple(f"S{j}" for j in range(9))


def noisy(n_posts: int, seed: int, *, prevalence: float = 0.25, flip: float = 0.15,
          n_symptoms: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Gold labels and decisions that agree except for a ``flip`` fraction."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n_posts, n_symptoms)) < prevalence).astype(int)
    pred = np.where(rng.random(y.shape) < flip, 1 - y, y)
    return y, pred


def point(symptoms, y, pred) -> dict[str, float]:
    """Our metric function on the (post, symptom) pairs of the two matrices."""
    names = np.repeat([list(symptoms)], len(y), axis=0).ravel()
    return symptom_metrics(names, y.ravel(), pred.ravel().astype(float), 0.5)


def reference_replicates(symptoms, y, pred, indices):
    """The slow way: per replicate, the resampled posts' pairs through symptom_metrics."""
    f1 = np.full((len(indices), len(symptoms)), np.nan)
    macro = np.zeros(len(indices))
    for b, rows in enumerate(indices):
        m = point(symptoms, y[rows], pred[rows])
        for j, name in enumerate(symptoms):
            f1[b, j] = m.get(f"f1/{name}", np.nan)
        macro[b] = m["symptom_macro_f1"]
    return f1, macro


def test_vectorized_replicates_equal_the_reference_loop_exactly():
    # 3 symptoms, one rare enough that some replicates have no gold and no predicted
    # positive (NaN, left out of the macro average) — the case a vectorized sum gets wrong.
    symptoms = ("A", "B", "C")
    y, pred = noisy(12, seed=3, n_symptoms=3)
    y[:, 2], pred[:, 2] = 0, 0
    y[0, 2] = pred[0, 2] = 1
    indices = resample_indices(len(y), n_boot=200, seed=11)
    f1, macro = replicate_f1(y, pred, indices)
    ref_f1, ref_macro = reference_replicates(symptoms, y, pred, indices)
    assert np.isnan(ref_f1[:, 2]).any() and not np.isnan(ref_f1[:, 2]).all()
    np.testing.assert_array_equal(f1, ref_f1)
    np.testing.assert_array_equal(macro, ref_macro)
    got = f1_intervals(symptoms, y, pred, n_boot=200, seed=11)
    for j, name in enumerate(symptoms):
        kept = ref_f1[:, j][~np.isnan(ref_f1[:, j])]
        assert got[f"f1/{name}"] == Interval(*np.percentile(kept, [2.5, 97.5]))
    assert got[MACRO] == Interval(*np.percentile(ref_macro, [2.5, 97.5]))


def test_nine_symptoms_match_the_reference_loop():
    y, pred = noisy(40, seed=5)
    indices = resample_indices(len(y), n_boot=100, seed=2)
    f1, macro = replicate_f1(y, pred, indices)
    ref_f1, ref_macro = reference_replicates(SYMPTOMS, y, pred, indices)
    np.testing.assert_array_equal(f1, ref_f1)
    # summation order of nine terms may differ in the last bit
    np.testing.assert_allclose(macro, ref_macro, rtol=0, atol=1e-12)


def test_the_interval_contains_the_point_estimate():
    y, pred = noisy(300, seed=0)
    got = f1_intervals(SYMPTOMS, y, pred)
    estimate = point(SYMPTOMS, y, pred)
    for key in [*(f"f1/{s}" for s in SYMPTOMS), MACRO]:
        interval = got[key]
        assert interval.low <= estimate[key] <= interval.high, (key, interval, estimate[key])
        assert interval.low < interval.high  # noisy decisions: not a degenerate interval


def test_all_decisions_right_gives_one_one():
    y, _ = noisy(60, seed=1)
    got = f1_intervals(SYMPTOMS, y, y.copy())
    assert set(got) == {*(f"f1/{s}" for s in SYMPTOMS), MACRO}
    assert all(v == Interval(1.0, 1.0) for v in got.values())


def test_the_interval_narrows_as_posts_grow():
    """Width shrinks about as 1/sqrt(n): 16x the posts should give ~1/4 the width; the
    bound asks for less than 3/5."""
    def width(n: int) -> float:
        got = f1_intervals(SYMPTOMS, *noisy(n, seed=7), seed=0)[MACRO]
        return got.high - got.low

    small, large = width(50), width(800)
    assert 0 < large < 0.6 * small, (small, large)


def test_same_seed_same_interval_other_seed_other_draws():
    y, pred = noisy(100, seed=4)
    assert f1_intervals(SYMPTOMS, y, pred, seed=3) == f1_intervals(SYMPTOMS, y, pred, seed=3)
    assert not np.array_equal(resample_indices(100, 10, 3), resample_indices(100, 10, 4))


def test_a_symptom_nobody_has_or_predicts_has_no_interval_and_none_scores_zero():
    y = np.zeros((5, 2), dtype=int)
    y[0, 0] = 1
    got = f1_intervals(("A", "B"), y, y.copy(), n_boot=50)
    assert set(got) == {"f1/A", MACRO}
    assert f1_intervals(("A",), np.zeros((4, 1)), np.zeros((4, 1)))[MACRO] == Interval(0, 0)
    assert percentile_interval(np.array([np.nan, np.nan])) is None


@pytest.mark.parametrize(("t", "p"), [((3, 2), (3, 1)), ((3, 2), (3, 2)), ((0, 1), (0, 1))])
def test_bad_shapes_are_refused(t, p):
    with pytest.raises(ValueError, match="must be"):
        f1_intervals(("A",), np.zeros(t), np.zeros(p))


def test_post_matrix_places_each_pair_in_its_post_row_and_symptom_column():
    class P:
        def __init__(self, post_id, symptom):
            self.post_id, self.symptom = post_id, symptom

    pairs = [P("b", "Y"), P("a", "X"), P("b", "X")]
    posts, m = post_matrix(pairs, [1.0, 2.0, 3.0], ("X", "Y"))
    assert posts == ["b", "a"]
    np.testing.assert_array_equal(m, [[3.0, 1.0], [2.0, 0.0]])
