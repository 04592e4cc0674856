"""The bag-of-words baseline every reported figure stands beside (``launch baseline``).

Trained on the train split of the same post-level split the agents use, scored with the
same metric functions, on the val or test split:

- criteria: TF-IDF of the post text, one logistic regression per symptom; a post is
  positive for a symptom when its probability reaches that symptom's decision threshold,
  chosen on val by :func:`decision_thresholds`, the models' rule
  (:mod:`psy_agents.training.calibrate`);
- evidence: per (post, symptom) pair, the post sentence with the highest TF-IDF cosine
  similarity to the criterion's description, or no answer when that similarity is below a
  cut chosen on val by :func:`choose_cut`.

scikit-learn is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from psy_agents.data.criteria import criterion_text
from psy_agents.lazy import lazy_import
from psy_agents.training.calibrate import DEFAULT_METHOD, fit_decision
from psy_agents.training.intervals import N_BOOT, Interval, f1_intervals, post_matrix
from psy_agents.training.metrics import best_match, span_metrics, symptom_metrics

sk_text = lazy_import("sklearn.feature_extraction.text")
sk_linear = lazy_import("sklearn.linear_model")

# A sentence: a run of text up to and including its end marks, or up to a line break.
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+[\"')\]]*|$)", re.MULTILINE)
# The fixed threshold the calibration starts from (TrainConfig.threshold's default).
FIXED_THRESHOLD = 0.5


@dataclass(frozen=True)
class CriteriaBaseline:
    """Post-level symptom figures: ``metrics`` as :func:`symptom_metrics` keys them,
    ``thresholds`` per symptom (chosen on val) and bootstrap ``intervals`` over posts."""

    metrics: dict[str, float]
    thresholds: dict[str, float]
    intervals: dict[str, Interval]


@dataclass(frozen=True)
class EvidenceBaseline:
    """Span figures (:func:`span_metrics` keys) and the similarity ``cut`` chosen on val."""

    metrics: dict[str, float]
    cut: float


@dataclass(frozen=True)
class BaselineResult:
    """Both baselines on one split, with what they were trained and scored on."""

    split: str
    posts: int
    pairs: int
    train_posts: int
    criteria: CriteriaBaseline
    evidence: EvidenceBaseline

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: intervals as ``[low, high]``."""
        return {
            "split": self.split, "posts": self.posts, "pairs": self.pairs,
            "train_posts": self.train_posts,
            "criteria": {"metrics": self.criteria.metrics,
                         "thresholds": self.criteria.thresholds,
                         "intervals": {k: [v.low, v.high]
                                       for k, v in self.criteria.intervals.items()}},
            "evidence": {"metrics": self.evidence.metrics, "cut": self.evidence.cut},
        }


# --- criteria ------------------------------------------------------------------------------

def decision_thresholds(symptoms: Sequence[str], y_true: np.ndarray, scores: np.ndarray
                        ) -> dict[str, float]:
    """One threshold per symptom from val labels and scores (``(n_posts, S)`` arrays), by
    the rule the models' decisions use (:data:`calibrate.DEFAULT_METHOD`), so that a
    baseline figure and a model's figure differ by the scores alone."""
    names = np.repeat([list(symptoms)], len(y_true), axis=0).ravel()
    posts = np.repeat(np.arange(len(y_true)), len(symptoms)).astype(str)
    decision = fit_decision(DEFAULT_METHOD, list(names), y_true.ravel(), scores.ravel(),
                            fixed=FIXED_THRESHOLD, posts=list(posts))
    return {name: decision.threshold(name) for name in symptoms}


def _posts(pairs: Sequence[Any], symptoms: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The split's post texts (first-seen order) and their ``(n_posts, S)`` labels."""
    posts, labels = post_matrix(pairs, [p.label for p in pairs], symptoms)
    text = {p.post_id: p.text for p in pairs}
    return [text[post] for post in posts], labels.astype(int)


def _symptom_scores(train_texts: list[str], train_y: np.ndarray, texts: Sequence[list[str]]
                    ) -> list[np.ndarray]:
    """P(present) per post and symptom for each list in ``texts``, from TF-IDF (uni- and
    bigrams, sublinear tf) + a class-balanced logistic regression per symptom. A symptom
    with one class in train scores that class for every post."""
    vec = sk_text.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    x_train = vec.fit_transform(train_texts)
    xs = [vec.transform(t) for t in texts]
    out = [np.zeros((len(t), train_y.shape[1])) for t in texts]
    for j in range(train_y.shape[1]):
        y = train_y[:, j]
        if y.min() == y.max():
            for o in out:
                o[:, j] = float(y[0])
            continue
        model = sk_linear.LogisticRegression(class_weight="balanced", max_iter=1000)
        model.fit(x_train, y)
        for o, x in zip(out, xs, strict=True):
            o[:, j] = model.predict_proba(x)[:, 1]
    return out


def criteria_baseline(train: Sequence[Any], val: Sequence[Any], scored: Sequence[Any],
                      symptoms: Sequence[str], *, n_boot: int = N_BOOT, seed: int = 0
                      ) -> CriteriaBaseline:
    """Fit on ``train``, choose thresholds on ``val``, score ``scored`` (pairs of each)."""
    (train_x, train_y), (val_x, val_y), (x, y) = (_posts(s, symptoms)
                                                  for s in (train, val, scored))
    val_p, probs = _symptom_scores(train_x, train_y, [val_x, x])
    thresholds = decision_thresholds(symptoms, val_y, val_p)
    decided = (probs >= np.array([thresholds[s] for s in symptoms])).astype(int)
    names = np.repeat([list(symptoms)], len(x), axis=0).ravel()
    # symptom_metrics takes one threshold: F1 from the 0/1 decisions, AUROC from the scores.
    by_decision = symptom_metrics(names, y.ravel(), decided.ravel(), 0.5)
    by_score = symptom_metrics(names, y.ravel(), probs.ravel(), 0.5)
    metrics = {k: v for k, v in by_decision.items() if k.startswith("f1/")}
    metrics["symptom_macro_f1"] = by_decision["symptom_macro_f1"]
    metrics.update({k: v for k, v in by_score.items() if "auroc" in k})
    intervals = f1_intervals(symptoms, y, decided, n_boot=n_boot, seed=seed)
    return CriteriaBaseline(metrics, thresholds, intervals)


# --- evidence ------------------------------------------------------------------------------

def sentences(text: str) -> list[str]:
    """``text`` cut into sentences (end marks kept, surrounding whitespace dropped)."""
    return [m.group().strip() for m in _SENTENCE.finditer(text) if m.group().strip()]


@dataclass(frozen=True)
class _Answers:
    """Per pair: the best sentence, its similarity, and whether it is a positive pair
    (present with a located span) or a negative one (absent); other pairs are neither."""

    best: list[str | None]
    sim: np.ndarray
    golds: list[list[str]]
    positive: np.ndarray
    negative: np.ndarray


def _best_sentences(vec: Any, pairs: Sequence[Any]) -> _Answers:
    split = {p.post_id: sentences(p.text) for p in pairs}
    order = list(split)
    flat = [s for post in order for s in split[post]]
    start = dict(zip(order, np.cumsum([0] + [len(split[p]) for p in order]), strict=False))
    symptoms = list(dict.fromkeys(p.symptom for p in pairs))
    sims = (vec.transform(flat) @ vec.transform([criterion_text(s) for s in symptoms]).T
            ).toarray() if flat else np.zeros((0, len(symptoms)))
    best: list[str | None] = []
    sim = np.full(len(pairs), -1.0)
    for i, pair in enumerate(pairs):
        lo, n = start[pair.post_id], len(split[pair.post_id])
        col = sims[lo:lo + n, symptoms.index(pair.symptom)]
        k = int(np.argmax(col)) if n else -1
        best.append(split[pair.post_id][k] if n else None)
        sim[i] = col[k] if n else -1.0
    golds = [[p.text[s.start:s.end] for s in p.spans] for p in pairs]
    positive = np.array([p.label == 1 and bool(p.spans) for p in pairs], dtype=bool)
    negative = np.array([p.label == 0 for p in pairs], dtype=bool)
    return _Answers(best, sim, golds, positive, negative)


def choose_cut(answers: _Answers) -> float:
    """The similarity below which the baseline says "no answer": the candidate (0 or a
    pair's similarity) maximizing mean(span F1 over positive pairs, no-answer accuracy
    over negative pairs) on val — span F1 alone would never abstain. Ties: the lowest."""
    pos = np.flatnonzero(answers.positive)
    f1 = np.array([best_match(answers.best[i], answers.golds[i])[0] for i in pos])
    best, best_score = 0.0, -1.0
    for cut in np.unique(np.concatenate([[0.0], answers.sim])):
        span_f1 = float(np.mean(np.where(answers.sim[pos] >= cut, f1, 0.0))) if len(pos) else 0
        neg = answers.sim[answers.negative]
        no_answer = float(np.mean(neg < cut)) if len(neg) else 0.0
        score = (span_f1 + no_answer) / 2
        if score > best_score:
            best, best_score = float(cut), score
    return best


def evidence_baseline(train: Sequence[Any], val: Sequence[Any], scored: Sequence[Any]
                      ) -> EvidenceBaseline:
    """Fit TF-IDF on train sentences and the criteria, cut on ``val``, score ``scored``."""
    corpus = [s for text in dict.fromkeys(p.text for p in train) for s in sentences(text)]
    corpus += [criterion_text(s) for s in dict.fromkeys(p.symptom for p in train)]
    vec = sk_text.TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(corpus)
    cut = choose_cut(_best_sentences(vec, val))
    ans = _best_sentences(vec, scored)
    answered = [a if s >= cut else None for a, s in zip(ans.best, ans.sim, strict=True)]
    pos, neg = np.flatnonzero(ans.positive), np.flatnonzero(ans.negative)
    metrics = span_metrics([answered[i] for i in pos], [ans.golds[i] for i in pos],
                           [answered[i] is not None for i in neg])
    return EvidenceBaseline(metrics, cut)


def run_baseline(data: Any, split: str, *, n_boot: int = N_BOOT, seed: int = 0
                 ) -> BaselineResult:
    """Both baselines, trained on ``data``'s train split, tuned on val, scored on ``split``.

    Deterministic for equal arguments; reads and writes no file.

    Raises:
        DataError: ``split`` is not a split of ``data``.
    """
    train, val, scored = data.split("train"), data.split("val"), data.split(split)
    symptoms = tuple(data.symptoms)
    criteria = criteria_baseline(train, val, scored, symptoms, n_boot=n_boot, seed=seed)
    evidence = evidence_baseline(train, val, scored)
    n_posts = len({p.post_id for p in scored})
    return BaselineResult(split, n_posts, len(scored), len({p.post_id for p in train}),
                          criteria, evidence)
