"""Metrics as pure helpers (no torch, no sklearn), each tested alone on tiny inputs.

- symptom macro-F1: positive-class F1 per symptom, averaged over the symptoms that have a
  gold or a predicted positive (a symptom with neither says nothing about the model, so it
  is left out, neither 0 nor 1: scikit-learn's ``zero_division=np.nan``);
- AUROC per symptom via the rank statistic (Mann-Whitney U, ties count one half);
- span token-F1 and exact match against the best-matching gold sentence, on SQuAD v1.1
  evaluation tokens (:func:`answer_tokens`), as published span results are scored; and
  no-answer accuracy.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence

import numpy as np


def binary_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float | None:
    """Positive-class F1, or ``None`` when there is no gold and no predicted positive."""
    t = np.asarray(y_true, dtype=bool)
    p = np.asarray(y_pred, dtype=bool)
    tp = int((t & p).sum())
    denom = int(t.sum()) + int(p.sum())
    if denom == 0:
        return None
    return 2 * tp / denom


def auroc(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve, or ``None`` if only one class is present."""
    t = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties so equal scores count one half
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def symptom_metrics(symptoms: Sequence[str], y_true: Sequence[int], probs: Sequence[float],
                    threshold: float) -> dict[str, float]:
    """Per-symptom F1/AUROC and their macro averages, keyed ``f1/<SYMPTOM>`` etc.

    ``symptoms``, ``y_true`` and ``probs`` are parallel (one entry per pair).
    ``symptom_macro_f1`` is the mean of the positive-class F1 over the symptoms with at least
    one gold or one predicted positive (``probs >= threshold``); a symptom with neither has
    no ``f1/<SYMPTOM>`` key and does not count, as with scikit-learn's
    ``f1_score(..., average="macro", zero_division=np.nan)``. It is 0.0 when no symptom
    counts, so predicting every symptom absent always scores 0. ``macro_auroc`` averages the
    symptoms with both classes present (0.5 when none has).
    """
    sym = np.asarray(symptoms)
    t = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    out: dict[str, float] = {}
    f1s, aucs = [], []
    for name in dict.fromkeys(symptoms):
        m = sym == name
        f1 = binary_f1(t[m], p[m] >= threshold)
        auc = auroc(t[m], p[m])
        if f1 is not None:
            out[f"f1/{name}"] = f1
            f1s.append(f1)
        if auc is not None:
            out[f"auroc/{name}"] = auc
            aucs.append(auc)
    out["symptom_macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
    out["macro_auroc"] = float(np.mean(aucs)) if aucs else 0.5
    return out


_DROP_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = frozenset({"a", "an", "the"})


def answer_tokens(text: str) -> list[str]:
    """The SQuAD v1.1 evaluation tokens of ``text``: lower case, ASCII punctuation deleted
    (not replaced, so "don't" is the one token "dont"), the articles a/an/the dropped,
    split on any run of whitespace. Two answers are an exact match when their tokens are
    equal.
    """
    return [w for w in text.lower().translate(_DROP_PUNCTUATION).split() if w not in _ARTICLES]


def token_f1(pred: str, gold: str) -> float:
    """Token-level F1 of two strings over their :func:`answer_tokens` (bags of tokens);
    when either has no token, 1.0 if both have none, else 0.0."""
    p, g = answer_tokens(pred), answer_tokens(gold)
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def best_match(pred: str | None, golds: Sequence[str]) -> tuple[float, float]:
    """``(token_f1, exact_match)`` of ``pred`` against the best-matching gold sentence.

    ``pred`` is ``None`` when the model answered "no answer": both scores are 0.
    """
    if pred is None or not golds:
        return 0.0, 0.0
    f1 = max(token_f1(pred, g) for g in golds)
    em = float(any(answer_tokens(pred) == answer_tokens(g) for g in golds))
    return f1, em


def span_metrics(preds: Sequence[str | None], golds: Sequence[Sequence[str]],
                 negative_answered: Sequence[bool]) -> dict[str, float]:
    """Span F1 / EM over positive pairs and no-answer accuracy over negative pairs.

    Args:
        preds: the predicted span text per positive pair (``None`` = no answer).
        golds: the gold sentences per positive pair.
        negative_answered: per negative pair, whether the model gave a span anyway.
    """
    scores = [best_match(p, g) for p, g in zip(preds, golds, strict=True)]
    out = {
        "span_f1": float(np.mean([s[0] for s in scores])) if scores else 0.0,
        "span_em": float(np.mean([s[1] for s in scores])) if scores else 0.0,
    }
    if len(negative_answered):
        out["no_answer_acc"] = float(1 - np.mean(np.asarray(negative_answered, dtype=float)))
    return out
