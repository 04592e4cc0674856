"""Hand-made data for training tests: pairs whose evidence sits at a chosen window."""

from __future__ import annotations

import random
from dataclasses import dataclass

from psy_agents.data.pairs import Pair, Span

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
