"""Decision thresholds chosen on the val split: which probability makes a symptom "present".

A model trained on ~89 % negatives can sit far from 0.5, and the nine symptoms' base rates
differ tenfold, so one fixed cut-off can leave a symptom at F1 0 with a good AUROC. But
val is small (a handful of positive posts for the rarest symptoms), so a cut-off tuned per
symptom on it overfits. The methods (:data:`METHODS`):

- ``fixed``: ``TrainConfig.threshold`` (0.5) for every symptom;
- ``global``: the one threshold that maximizes val macro-F1 over all symptoms;
- ``shrunk``: each symptom's F1-best val threshold, pulled toward the global one in logit
  space with weight ``n_pos / (n_pos + SHRINK_POSITIVES)``: a symptom with 5 positive val
  posts moves a third of the way from the global threshold to its own, one with 100 most
  of the way;
- ``auto`` (the default): the rule of the three above that generalizes best on val itself:
  5-fold cross-validation over the val posts (each fold decided by thresholds chosen on
  the other four; all folds' decisions scored together), ties to the simpler rule. A model
  whose scores sit well around 0.5 keeps ``fixed``; one that sits far from it gets tuned
  thresholds. The chosen rule's thresholds are then fitted on all of val.

The evidence agent's no-answer decision gets the same treatment: the margin (best span
score minus the no-answer score) above which a pair is answered, chosen on val for
the mean of span F1 and no-answer accuracy (:func:`choose_margin`).

Pure numpy; a :class:`Decision` is saved beside a model (``decision.json``) and applied
by ``launch eval`` and the refit to the test split, which never chooses anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psy_agents.errors import ConfigError
from psy_agents.training.metrics import binary_f1

RULES = ("fixed", "global", "shrunk")
METHODS = (*RULES, "auto")
# The rule of TrainConfig.decision's default and of `launch baseline` (README "Calibrated
# decisions": the comparison it was chosen by).
DEFAULT_METHOD = "auto"
# auto: folds of the val posts for its cross-validation, and their seed.
CV_FOLDS = 5
CV_SEED = 20261207
# Positive val posts at which a symptom's own threshold and the global one weigh the same.
SHRINK_POSITIVES = 10.0
# At most this many candidate thresholds per search (quantiles of the scores beyond it).
MAX_CANDIDATES = 256
DECISION_FILE = "decision.json"


@dataclass(frozen=True)
class Decision:
    """How a model's scores become decisions.

    Attributes:
        method: one of :data:`METHODS` (how ``thresholds`` were chosen).
        default: the threshold of a symptom not in ``thresholds`` (the global one).
        thresholds: per symptom, predict present at ``probability >= threshold``.
        margin: evidence: answer a pair when its best span beats no-answer by more.
    """

    method: str = "fixed"
    default: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)
    margin: float = 0.0

    def threshold(self, symptom: str) -> float:
        return self.thresholds.get(symptom, self.default)

    def decide(self, symptoms: Sequence[str], probs: Sequence[float]) -> np.ndarray:
        """0/1 decisions of parallel ``symptoms`` and ``probs``."""
        cut = np.array([self.threshold(s) for s in symptoms], dtype=np.float64)
        return (np.asarray(probs, dtype=np.float64) >= cut).astype(int)

    def save(self, model_dir: Path) -> None:
        """Write ``decision.json`` in ``model_dir``."""
        self.save_as(Path(model_dir, DECISION_FILE))

    def save_as(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, model_dir: Path, fallback: float) -> Decision | None:
        """The decision saved in ``model_dir``, or None when it has none (a model saved
        before decisions were: the caller falls back to ``fixed`` at ``fallback``)."""
        path = Path(model_dir, DECISION_FILE)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(method=data["method"], default=float(data.get("default", fallback)),
                   thresholds={k: float(v) for k, v in data["thresholds"].items()},
                   margin=float(data.get("margin", 0.0)))


def candidates(scores: np.ndarray) -> np.ndarray:
    """Thresholds worth trying: the lowest score (everything positive) and the midpoint of
    each gap between two neighbouring distinct scores (a cut-off anywhere in a gap decides
    alike; its middle leaves the most room to scores not seen yet), from at most
    MAX_CANDIDATES distinct scores (quantiles of them beyond that)."""
    values = np.unique(np.asarray(scores, dtype=np.float64))
    if len(values) > MAX_CANDIDATES:
        values = np.unique(np.quantile(values, np.linspace(0, 1, MAX_CANDIDATES)))
    if len(values) == 0:
        return values
    return np.r_[values[0], (values[1:] + values[:-1]) / 2]


def _argbest(grid: np.ndarray, gains: np.ndarray, prefer: float) -> float:
    """The grid value of the best gain; ties go to the value nearest ``prefer``."""
    best = np.flatnonzero(gains >= gains.max() - 1e-12)
    return float(grid[best[np.argmin(np.abs(grid[best] - prefer))]])


def f1_curve(y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Positive-class F1 of ``probs >= t`` for every ``t`` of ``grid`` at once, and where
    it is defined (a gold or a predicted positive: :func:`metrics.binary_f1`'s rule)."""
    y = np.asarray(y_true, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    predicted = len(p) - np.searchsorted(np.sort(p), grid, side="left")
    hits = int(y.sum()) - np.searchsorted(np.sort(p[y]), grid, side="left")
    denom = int(y.sum()) + predicted
    return 2 * hits / np.maximum(denom, 1), denom > 0


def best_threshold(y_true: np.ndarray, probs: np.ndarray, prefer: float = 0.5) -> float:
    """The threshold maximizing positive-class F1 of ``probs >= t`` (``prefer`` when no
    positive is there to find)."""
    if not np.any(y_true):
        return prefer
    grid = candidates(probs)
    return _argbest(grid, f1_curve(y_true, probs, grid)[0], prefer)


def _macro_curve(groups: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray
                 ) -> np.ndarray:
    """Macro-F1 (over the symptoms where F1 is defined; 0 where none is) at every ``t``."""
    total, counted = np.zeros(len(grid)), np.zeros(len(grid))
    for y, p in groups:
        f1, defined = f1_curve(y, p, grid)
        total += np.where(defined, f1, 0.0)
        counted += defined
    return np.where(counted > 0, total / np.maximum(counted, 1), 0.0)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def fit_decision(method: str, symptoms: Sequence[str], y_true: Sequence[int],
                 probs: Sequence[float], *, fixed: float = 0.5,
                 posts: Sequence[str] | None = None) -> Decision:
    """Choose thresholds by ``method`` from parallel val ``symptoms``/``y_true``/``probs``
    (``posts``: each pair's post, which ``auto`` keeps within one fold; None: each pair is
    its own post).

    Raises:
        ConfigError: an unknown method (the message lists the valid ones).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown decision method {method!r}",
                          f"use one of: {', '.join(METHODS)}")
    if method == "auto":
        scores = cv_scores(symptoms, y_true, probs, posts, fixed=fixed)
        rule = max(RULES, key=lambda r: (scores[r], -RULES.index(r)))  # ties: the simpler
        return dataclasses.replace(fit_decision(rule, symptoms, y_true, probs, fixed=fixed),
                                   method="auto")
    sym = np.asarray(symptoms)
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    names = list(dict.fromkeys(symptoms))
    if method == "fixed" or not len(p):
        return Decision("fixed", fixed, {s: fixed for s in names})
    groups = [(y[sym == s], p[sym == s]) for s in names]
    grid = candidates(p)
    glob = _argbest(grid, _macro_curve(groups, grid), fixed)
    if method == "global":
        return Decision("global", glob, {s: glob for s in names})
    out = {}
    for name, (ys, ps) in zip(names, groups, strict=True):
        n_pos = int(ys.sum())
        w = n_pos / (n_pos + SHRINK_POSITIVES)
        own = best_threshold(ys, ps, prefer=glob)
        mixed = w * _logit(own) + (1 - w) * _logit(glob)
        out[name] = 1 / (1 + math.exp(-mixed))
    return Decision("shrunk", glob, out)


def folds_of(posts: Sequence[str], folds: int = CV_FOLDS) -> np.ndarray:
    """A fold per pair: the posts dealt round-robin in a seeded shuffle of their sorted ids,
    so a post's pairs share a fold and the folds do not depend on the pairs' order."""
    ids = sorted(set(posts))
    order = np.random.default_rng(CV_SEED).permutation(len(ids))
    fold = {ids[j]: i % folds for i, j in enumerate(order)}
    return np.array([fold[post] for post in posts])


def cv_scores(symptoms: Sequence[str], y_true: Sequence[int], probs: Sequence[float],
              posts: Sequence[str] | None, *, fixed: float = 0.5,
              folds: int = CV_FOLDS) -> dict[str, float]:
    """Each rule's macro-F1 on val posts it did not choose from: thresholds fitted on all
    folds but one decide that one, and the decisions of every fold are scored together."""
    sym = np.asarray(symptoms)
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    fold = folds_of([str(i) for i in range(len(p))] if posts is None else list(posts), folds)
    scores = {}
    for rule in RULES:
        decided = np.zeros(len(p), dtype=int)
        for k in range(folds):
            held = fold == k
            if held.any():
                d = fit_decision(rule, sym[~held], y[~held], p[~held], fixed=fixed)
                decided[held] = d.decide(sym[held], p[held])
        scores[rule] = decision_macro_f1(sym, y, decided)
    return scores


def decision_f1s(symptoms: np.ndarray, y_true: np.ndarray, decided: np.ndarray
                 ) -> dict[str, float]:
    """Per-symptom positive-class F1 of 0/1 ``decided`` where it is defined (a gold or a
    decided positive), in the symptoms' first-seen order."""
    return {s: f for s in dict.fromkeys(symptoms.tolist())
            if (f := binary_f1(y_true[symptoms == s], decided[symptoms == s])) is not None}


def decision_macro_f1(symptoms: np.ndarray, y_true: np.ndarray, decided: np.ndarray) -> float:
    """Symptom macro-F1 of 0/1 ``decided`` (symptoms where F1 is defined; 0 if none)."""
    f1s = list(decision_f1s(symptoms, y_true, decided).values())
    return float(np.mean(f1s)) if f1s else 0.0


def choose_margin(margins: np.ndarray, score_at: Callable[[float], float]) -> float:
    """The no-answer margin maximizing ``score_at(margin)`` over the distinct val margins
    and 0 (ties: nearest 0, the untuned rule)."""
    grid = np.unique(np.concatenate([candidates(margins[np.isfinite(margins)]), [0.0]]))
    return _argbest(grid, np.array([score_at(float(m)) for m in grid]), 0.0)


def decision_metrics(decision: Decision, symptoms: Sequence[str], y_true: Sequence[int],
                     probs: Sequence[float]) -> dict[str, float]:
    """Per-symptom F1 and macro-F1 of ``decision`` (keys as ``symptom_metrics``'), plus
    ``threshold/<SYMPTOM>``: what a model's metrics.json keeps of its decision."""
    sym = np.asarray(symptoms)
    f1s = decision_f1s(sym, np.asarray(y_true, dtype=int), decision.decide(symptoms, probs))
    out: dict[str, float] = {}
    for name in dict.fromkeys(symptoms):
        if name in f1s:
            out[f"f1/{name}"] = f1s[name]
        out[f"threshold/{name}"] = decision.threshold(name)
    out["symptom_macro_f1"] = float(np.mean(list(f1s.values()))) if f1s else 0.0
    out["threshold_default"] = decision.default
    return out


def decision_from_metrics(metrics: Mapping[str, Any], method: str) -> Decision:
    """The decision an epoch's metrics record (``threshold/<S>``, ``threshold_default``,
    ``no_answer_margin``, as :func:`decision_metrics` and the evaluation write them)."""
    thresholds = {k.split("/", 1)[1]: float(v) for k, v in metrics.items()
                  if k.startswith("threshold/")}
    return Decision(method, float(metrics.get("threshold_default", 0.5)), thresholds,
                    float(metrics.get("no_answer_margin", 0.0)))
