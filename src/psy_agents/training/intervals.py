"""95 % percentile bootstrap intervals over posts for per-symptom F1 and symptom macro-F1.

The unit resampled is the post, not the (post, symptom) pair: a post's nine labels come from
one text and one annotator pass, so they vary together, and resampling pairs would treat them
as independent and give intervals too narrow. Each replicate draws ``n_posts`` posts with
replacement and recomputes every symptom's F1 and their macro average exactly as
:func:`psy_agents.training.metrics.symptom_metrics` does (a symptom with no gold and no
predicted positive in the replicate is left out of the average; no symptom left: 0.0).

Vectorized: a replicate is a vector of per-post draw counts, so its per-symptom counts of
true positives, gold and predicted positives are one ``(B, n) @ (n, S)`` product — 1,000
replicates of ~300 posts x 9 symptoms take milliseconds, not the seconds a loop over
:func:`symptom_metrics` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

N_BOOT = 1000
LEVEL = 0.95
MACRO = "symptom_macro_f1"


@dataclass(frozen=True)
class Interval:
    """A two-sided interval ``[low, high]``."""

    low: float
    high: float

    def __str__(self) -> str:
        return f"[{self.low:.4f}, {self.high:.4f}]"


def resample_indices(n_posts: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n_posts)`` post indices drawn with replacement; the same for equal
    arguments (``numpy.random.default_rng(seed)``).

    Raises:
        ValueError: ``n_posts`` or ``n_boot`` is below 1.
    """
    if n_posts < 1 or n_boot < 1:
        raise ValueError(f"The values of `n_posts` and `n_boot` are {n_posts} and {n_boot}, "
                         "but both must be >= 1")
    return np.random.default_rng(seed).integers(0, n_posts, size=(n_boot, n_posts))


def _draw_counts(indices: np.ndarray) -> np.ndarray:
    """``(B, n)`` float: how many times replicate b drew post i."""
    n_boot, n_posts = indices.shape
    flat = indices + n_posts * np.arange(n_boot)[:, None]
    return np.bincount(flat.ravel(), minlength=n_boot * n_posts).reshape(
        n_boot, n_posts).astype(np.float64)


def replicate_f1(y_true: np.ndarray, y_pred: np.ndarray, indices: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-replicate F1 of each symptom and the macro-F1.

    Args:
        y_true, y_pred: ``(n_posts, n_symptoms)`` 0/1 gold labels and decisions.
        indices: ``(B, n_posts)`` resampled post indices (:func:`resample_indices`).

    Returns:
        ``(f1, macro)``: ``(B, n_symptoms)`` with NaN where a symptom has no gold and no
        predicted positive in the replicate, and ``(B,)``.
    """
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    counts = _draw_counts(indices)
    tp = counts @ (t & p).astype(np.float64)
    denom = counts @ t.astype(np.float64) + counts @ p.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / denom, np.nan)
    counted = (denom > 0).sum(axis=1)
    total = np.where(denom > 0, f1, 0.0).sum(axis=1)
    macro = np.divide(total, counted, out=np.zeros(len(f1)), where=counted > 0)
    return f1, macro


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> Interval | None:
    """The central ``level`` percentile interval of ``values`` (NaN ignored); None if all
    are NaN."""
    kept = values[~np.isnan(values)]
    if not len(kept):
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(kept, [tail, 100 - tail])
    return Interval(float(low), float(high))


def f1_intervals(symptoms: Sequence[str], y_true: Any, y_pred: Any, *, n_boot: int = N_BOOT,
                 seed: int = 0, level: float = LEVEL) -> dict[str, Interval]:
    """Bootstrap intervals of each symptom's F1 and of the symptom macro-F1, over posts.

    Pure and deterministic for equal arguments.

    Args:
        symptoms: the column names of ``y_true`` / ``y_pred``.
        y_true, y_pred: ``(n_posts, len(symptoms))`` 0/1 gold labels and decisions.

    Returns:
        ``{"f1/<SYMPTOM>": Interval, ..., "symptom_macro_f1": Interval}``; a symptom that no
        replicate can score (no gold and no predicted positive at all) has no key.

    Raises:
        ValueError: the two arrays differ in shape, or do not have one column per symptom,
            or hold no post.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(symptoms):
        raise ValueError(f"The shapes of `y_true` and `y_pred` are {t.shape} and {p.shape}, "
                         f"but both must be (n_posts, {len(symptoms)})")
    f1, macro = replicate_f1(t, p, resample_indices(len(t), n_boot, seed))
    out: dict[str, Interval] = {}
    for j, name in enumerate(symptoms):
        interval = percentile_interval(f1[:, j], level)
        if interval is not None:
            out[f"f1/{name}"] = interval
    out[MACRO] = percentile_interval(macro, level) or Interval(0.0, 0.0)
    return out


def post_matrix(pairs: Sequence[Any], values: Sequence[float], symptoms: Sequence[str]
                ) -> tuple[list[str], np.ndarray]:
    """Per-pair ``values`` as a ``(n_posts, len(symptoms))`` matrix, posts in first-seen
    order; a (post, symptom) pair missing from ``pairs`` is 0.

    ``pairs`` need ``post_id`` and ``symptom`` (a :class:`~psy_agents.data.pairs.Pair`);
    ``values`` is parallel to it.
    """
    posts = list(dict.fromkeys(p.post_id for p in pairs))
    row = {post: i for i, post in enumerate(posts)}
    col = {name: j for j, name in enumerate(symptoms)}
    out = np.zeros((len(posts), len(symptoms)), dtype=np.float64)
    for pair, value in zip(pairs, values, strict=True):
        out[row[pair.post_id], col[pair.symptom]] = value
    return posts, out


def pair_intervals(pairs: Sequence[Any], decisions: Sequence[int], symptoms: Sequence[str],
                   *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Interval]:
    """:func:`f1_intervals` of per-pair 0/1 ``decisions`` (parallel to ``pairs``, which
    need ``post_id``, ``symptom`` and ``label``), resampling the pairs' posts."""
    _, y = post_matrix(pairs, [p.label for p in pairs], symptoms)
    _, d = post_matrix(pairs, decisions, symptoms)
    return f1_intervals(symptoms, y, d, n_boot=n_boot, seed=seed)
