"""Hand-made data for training tests: pairs whose evidence sits at a chosen window."""

from __future__ import annotations

import random
from dataclasses import dataclass

from psy_agents.data.pairs import Pair, Span
from psy_agents.training.metrics import span_metrics, symptom_metrics

FILLERS = (
    "I bought a used bike a while ago.", "My job involves a lot of spreadsheets.",
    "We adopted a dog from the shelter last year.", "The weather has been mild lately.",
    "My sister lives in another city.", "I started learning to play the guitar.",
    "Our neighbours have loud parties.", "I take the bus to work most days.",
)
EVIDENCE = ("I lie awake every night and cannot sleep.",
            "My insomnia keeps me up until dawn.",
            "I wake at four and never fall asleep again.")
SYMPTOM = "SLEEP_ISSUES"


def make_post(rng: random.Random, n_before: int, n_after: int,
              evidence: str | None) -> tuple[str, tuple[Span, ...]]:
    """Fillers, then the evidence sentence (if any), then fillers; its char span."""
    before = " ".join(rng.choice(FILLERS) for _ in range(n_before))
    after = " ".join(rng.choice(FILLERS) for _ in range(n_after))
    if evidence is None:
        return (before + " " + after).strip(), ()
    text = f"{before} {evidence} {after}".strip()
    start = text.index(evidence, len(before))
    return text, (Span(start, start + len(evidence), evidence),)


def sleep_pairs(n: int, seed: int, *, max_before: int = 12) -> tuple[Pair, ...]:
    """``n`` SLEEP_ISSUES pairs, about two thirds present, evidence anywhere in the post."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        present = i % 3 != 2
        ev = rng.choice(EVIDENCE) if present else None
        text, spans = make_post(rng, rng.randint(0, max_before), rng.randint(0, 3), ev)
        out.append(Pair(f"p{seed}_{i}", SYMPTOM, text, int(present), spans))
    return tuple(out)


@dataclass(frozen=True)
class HandData:
    """Quacks like PreparedData for run_training."""

    train: tuple[Pair, ...]
    val: tuple[Pair, ...]
    test: tuple[Pair, ...]
    data_hash: str = "hand-made"
    split_hash: str = "hand-made"
    symptoms: tuple[str, ...] = (SYMPTOM,)

    def split(self, name: str) -> tuple[Pair, ...]:
        return getattr(self, name)


def corpus_texts() -> list[str]:
    """Texts to train the tiny test vocabulary on."""
    from psy_agents.data.criteria import SYMPTOMS, criterion_text

    return [*FILLERS, *EVIDENCE, *(criterion_text(s) for s in SYMPTOMS)] * 3


# What every agent of tests/training/test_train_sample.py trains with on data/sample.
SAMPLE_SETTINGS = {"max_length": 256, "stride": 64, "batch_size": 16, "warmup_ratio": 0.05,
                   "dropout": 0.0}
# The criteria agent's settings that learn on data/sample in 2 epochs (val macro-F1
# 0.899 / 0.896 / 0.868 with seeds 0 / 1 / 2); the Slurm campaign of
# tests/cli/test_cli_hpo_slurm.py holds them too, so its trials are those seeds.
CRITERIA_SETTINGS = {**SAMPLE_SETTINGS, "lr": 1e-3, "pooling": "mean", "cls_neg_fraction": 0.5}


def trivial_baselines(pairs) -> dict[str, dict[str, float]]:
    """The val metrics of predictors that read nothing, on ``pairs``: every symptom absent
    (the majority class) or present, never or always answering a span question. Always
    answering has no fixed span F1 (it depends on the span), so only its no-answer
    accuracy is given."""
    sym = ([p.symptom for p in pairs], [p.label for p in pairs])
    pos = [p for p in pairs if p.label == 1 and p.spans]
    golds = [[s.sentence for s in p.spans] for p in pos]
    n_neg = sum(p.label == 0 for p in pairs)
    return {
        "all_absent": symptom_metrics(*sym, [0.0] * len(pairs), threshold=0.5),
        "all_present": symptom_metrics(*sym, [1.0] * len(pairs), threshold=0.5),
        "never_answer": span_metrics([None] * len(pos), golds, [False] * n_neg),
        "always_answer": {"no_answer_acc": span_metrics([], [], [True] * n_neg)["no_answer_acc"]},
    }


def passing_trivial(floors: dict[str, float], baselines: dict[str, dict[str, float]]
                    ) -> list[str]:
    """The trivial predictors that would meet every one of ``floors`` they have a value
    for ([] when each misses one: the floors say the model learned something)."""
    return [name for name, b in baselines.items()
            if floors.keys() & b.keys() and all(b[k] >= f for k, f in floors.items() if k in b)]
