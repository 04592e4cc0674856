"""(post, symptom) pairs with labels and gold evidence spans located in the post text.

Labels: a pair is present (1) if any status-1 annotation row names it, else absent (0) —
ReDSM5 posts are exhaustively annotated, so status-0 rows and unannotated pairs are both
absent. Evidence sentences are located as character spans: first verbatim, then after
NFKC + whitespace-collapse normalization (the real file has double spaces and full-width
characters that differ from the post); a sentence found neither way is reported and the
pair keeps its label with one span fewer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# Evidence starting at or past this many tokens is outside the first 512-token window.
WINDOW_TOKENS = 512
# A tokenizer-free stand-in for a WordPiece pre-tokenizer: words and single punctuation marks.
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Span:
    """A located evidence sentence: ``text[start:end]`` of its pair's post."""

    start: int
    end: int
    sentence: str


@dataclass(frozen=True)
class Pair:
    """One (post, symptom) example. ``label`` 1 = present, 0 = absent."""

    post_id: str
    symptom: str
    text: str
    label: int
    spans: tuple[Span, ...] = ()


@dataclass(frozen=True)
class Annotation:
    """One annotation row as the loader kept it; ``row`` is its 1-based data row."""

    row: int
    post_id: str
    symptom: str
    status: int
    sentence: str


@dataclass
class LocateReport:
    """Rows (1-based data rows of the annotations file) by how their evidence was found."""

    normalized: list[int] = field(default_factory=list)
    unlocatable: list[int] = field(default_factory=list)
    beyond_window: list[int] = field(default_factory=list)


def normalize(text: str) -> str:
    """NFKC, then every whitespace run becomes one space, ends stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _normalized_with_map(text: str) -> tuple[str, list[int]]:
    """Normalize ``text`` char by char; ``index[i]`` = original index of normalized char i."""
    out: list[str] = []
    index: list[int] = []
    for i, ch in enumerate(text):
        for piece in unicodedata.normalize("NFKC", ch):
            if piece.isspace():
                if out and out[-1] != " ":
                    out.append(" ")
                    index.append(i)
            else:
                out.append(piece)
                index.append(i)
    if out and out[-1] == " ":
        out.pop()
        index.pop()
    return "".join(out), index


def locate(text: str, sentence: str) -> tuple[Span | None, bool]:
    """Find ``sentence`` in ``text``.

    Returns:
        ``(span, exact)``: the first verbatim occurrence (exact=True), else the first
        normalized occurrence whose span normalizes back to the sentence (exact=False), else
        ``(None, False)``. Any returned span satisfies
        ``normalize(text[start:end]) == normalize(sentence)``.
    """
    if sentence:
        pos = text.find(sentence)
        if pos >= 0:
            return Span(pos, pos + len(sentence), sentence), True
    target = normalize(sentence)
    if not target:
        return None, False
    norm, index = _normalized_with_map(text)
    pos = norm.find(target)
    while pos >= 0:
        start, end = index[pos], index[pos + len(target) - 1] + 1
        # Per-char NFKC can differ from whole-string NFKC (combining marks, ligatures):
        # accept a candidate only if it round-trips, so the span contract always holds.
        if normalize(text[start:end]) == target:
            return Span(start, end, sentence), False
        pos = norm.find(target, pos + 1)
    return None, False


def token_offset(text: str, char_pos: int) -> int:
    """How many tokens (words and punctuation marks) precede ``char_pos`` in ``text``."""
    return len(_TOKEN.findall(text, 0, char_pos))


def _spans_for(text: str, rows: Sequence[Annotation], report: LocateReport) -> tuple[Span, ...]:
    spans: dict[tuple[int, int], Span] = {}
    for ann in rows:
        if ann.status != 1:
            continue
        span, exact = locate(text, ann.sentence)
        if span is None:
            report.unlocatable.append(ann.row)
            continue
        if not exact:
            report.normalized.append(ann.row)
        if token_offset(text, span.start) >= WINDOW_TOKENS:
            report.beyond_window.append(ann.row)
        spans.setdefault((span.start, span.end), span)
    return tuple(spans[key] for key in sorted(spans))


def build_pairs(posts: Mapping[str, str], annotations: Iterable[Annotation],
                symptoms: Sequence[str]) -> tuple[tuple[Pair, ...], LocateReport]:
    """Every (post, symptom) pair for every post, in post order then ``symptoms`` order.

    Annotation rows whose symptom is not in ``symptoms`` are ignored (the loader reports
    them). Idempotent; raises nothing for well-formed input (the loader checked it).

    Returns:
        The pairs and a :class:`LocateReport` of how each status-1 sentence was located.
    """
    wanted = set(symptoms)
    by_pair: dict[tuple[str, str], list[Annotation]] = {}
    for ann in annotations:
        if ann.symptom in wanted:
            by_pair.setdefault((ann.post_id, ann.symptom), []).append(ann)
    report = LocateReport()
    pairs: list[Pair] = []
    for post_id, text in posts.items():
        for symptom in symptoms:
            rows = by_pair.get((post_id, symptom), [])
            label = int(any(a.status == 1 for a in rows))
            pairs.append(Pair(post_id, symptom, text, label, _spans_for(text, rows, report)))
    return tuple(pairs), report
