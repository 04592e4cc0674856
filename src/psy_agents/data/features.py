"""Tokenized features: (criterion description, post) pairs cut into overlapping windows.

A long post is never truncated: the fast tokenizer's overflow (``max_length``, ``stride``)
yields as many windows as it takes. Gold character spans are mapped to token positions per
window; a window that does not hold a whole gold span gets the no-answer target (position 0,
the CLS token). Features are cached on disk, keyed by (data hash, pair contents, tokenizer,
max_length, stride), and in memory for the life of the process (one worker, many trials).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psy_agents.data.criteria import criterion_text, symptoms_for
from psy_agents.errors import ConfigError

_MEMORY: dict[str, WindowSet] = {}
_FORMAT = "3"  # bump when WindowSet changes: part of the cache key
_CHUNK = 256  # pairs per tokenizer call: large enough for the Rust batcher, small in memory


@dataclass(frozen=True)
class WindowSet:
    """All windows of one list of pairs, in pair order.

    Attributes:
        input_ids: one int array per window (no padding).
        token_type_ids: same shapes, or ``None`` for tokenizers without segment ids.
        offsets: per window a ``(T, 2)`` array of char offsets into the post; ``-1`` rows mark
            tokens outside the post (question, specials), which can never be part of a span.
        pair_index: window -> index of its pair.
        cls_target: 1.0 if the window shows the symptom (overlaps a gold span, or the pair is
            present but none of its spans could be located), else 0.0.
        start, end: token positions of the earliest gold span wholly inside the window; 0/0
            (CLS) = no answer.
        match: per window, for each token: 2 if it is a post token whose word occurs in this
            criterion's description and in no other's, 1 if it occurs in this one and
            others too (common words), else 0 (see :func:`criterion_match`).
        spans: per window a ``(k, 2)`` array of the token (start, end) of every gold span
            wholly inside it (``k = 0``: no answer). A post often holds two evidence
            sentences for one symptom; the span loss accepts any of them.
        n_pairs: number of pairs the windows came from.
    """

    input_ids: tuple[np.ndarray, ...]
    token_type_ids: tuple[np.ndarray, ...] | None
    offsets: tuple[np.ndarray, ...]
    pair_index: np.ndarray
    cls_target: np.ndarray
    start: np.ndarray
    end: np.ndarray
    match: tuple[np.ndarray, ...]
    spans: tuple[np.ndarray, ...]
    n_pairs: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)

    @property
    def has_span(self) -> np.ndarray:
        return self.start > 0


def _pairs_digest(pairs: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        spans = ";".join(f"{s.start}:{s.end}" for s in p.spans)
        h.update(f"{p.post_id}\x1f{p.symptom}\x1f{p.label}\x1f{spans}\x1f{p.text}\x1e".encode())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tok: Any) -> str:
    """A hash that changes whenever the tokenizer would split text differently."""
    return hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def feature_key(pairs: Sequence[Any], tokenizer: Any, max_length: int, stride: int,
                data_hash: str) -> str:
    """The cache key of a feature set; equal keys mean byte-identical features."""
    parts = [_FORMAT, data_hash, _pairs_digest(pairs), tokenizer_fingerprint(tokenizer),
             str(max_length), str(stride)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def build_windows(pairs: Sequence[Any], tokenizer: Any, *, max_length: int, stride: int,
                  data_hash: str = "", cache_dir: Path | None = None) -> WindowSet:
    """Tokenize ``pairs`` into windows, reusing the in-memory or on-disk cache.

    Args:
        pairs: ``Pair`` objects (post_id, symptom, text, label, spans).
        tokenizer: a fast HF tokenizer (offsets are needed).
        cache_dir: where feature files live; ``None`` keeps them in memory only.

    Raises:
        ConfigError: if ``max_length`` leaves no room for the post after the description.
    """
    key = feature_key(pairs, tokenizer, max_length, stride, data_hash)
    if key in _MEMORY:
        return _MEMORY[key]
    path = Path(cache_dir) / f"features-{key}.pkl" if cache_dir else None
    if path is not None and path.exists():
        with open(path, "rb") as fh:
            _MEMORY[key] = pickle.load(fh)
        return _MEMORY[key]
    ws = _tokenize(pairs, tokenizer, max_length, stride)
    if path is not None:
        _atomic_pickle(ws, path)
    _MEMORY[key] = ws
    return ws


def _atomic_pickle(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".features-", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def _check_room(questions: Sequence[str], tokenizer: Any, max_length: int, stride: int) -> None:
    longest = max(len(tokenizer(q)["input_ids"]) for q in set(questions))
    room = max_length - longest - 1  # the question's [CLS]..[SEP] counted, one more [SEP]
    if room <= stride:
        raise ConfigError(
            f"max_length {max_length} leaves {room} post tokens per window after the "
            f"{longest}-token criterion description, but stride is {stride}",
            f"raise max_length above {longest + stride + 2} or lower stride")


def _tokenize(pairs: Sequence[Any], tokenizer: Any, max_length: int, stride: int) -> WindowSet:
    questions = [criterion_text(p.symptom) for p in pairs]
    shared = shared_criterion_tokens(tokenizer)
    if pairs:
        _check_room(questions, tokenizer, max_length, stride)
    cols: dict[str, list[Any]] = {k: [] for k in ("ids", "types", "offsets", "pair", "cls",
                                                  "start", "end", "spans",
                                                  "match")}
    for lo in range(0, len(pairs), _CHUNK):
        chunk = pairs[lo:lo + _CHUNK]
        enc = tokenizer(questions[lo:lo + _CHUNK], [p.text for p in chunk],
                        truncation="only_second", max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
        for w, local in enumerate(enc["overflow_to_sample_mapping"]):
            pair = chunk[local]
            seq_ids = enc.sequence_ids(w)
            offsets = np.array([o if s == 1 else (-1, -1)
                                for o, s in zip(enc["offset_mapping"][w], seq_ids, strict=True)],
                               dtype=np.int32).reshape(-1, 2)
            ids = np.array(enc["input_ids"][w], dtype=np.int32)
            spans = window_spans(pair, offsets)
            cls, start, end = window_targets(pair, offsets, spans)
            cols["spans"].append(spans)
            cols["match"].append(criterion_match(ids, offsets, shared))
            cols["ids"].append(ids)
            if "token_type_ids" in enc:
                cols["types"].append(np.array(enc["token_type_ids"][w], dtype=np.int8))
            cols["offsets"].append(offsets)
            cols["pair"].append(lo + local)
            cols["cls"].append(cls)
            cols["start"].append(start)
            cols["end"].append(end)
    return WindowSet(
        input_ids=tuple(cols["ids"]),
        token_type_ids=tuple(cols["types"]) if cols["types"] else None,
        offsets=tuple(cols["offsets"]),
        pair_index=np.array(cols["pair"], dtype=np.int64),
        cls_target=np.array(cols["cls"], dtype=np.float32),
        start=np.array(cols["start"], dtype=np.int64),
        end=np.array(cols["end"], dtype=np.int64),
        match=tuple(cols["match"]),
        spans=tuple(cols["spans"]),
        n_pairs=len(pairs))


def shared_criterion_tokens(tokenizer: Any) -> np.ndarray:
    """Token ids that occur in two or more criterion descriptions (common words)."""
    seen: dict[int, int] = {}
    for symptom in symptoms_for(include_special_case=True):
        ids = tokenizer(criterion_text(symptom), add_special_tokens=False)["input_ids"]
        for i in set(ids):
            seen[i] = seen.get(i, 0) + 1
    return np.array(sorted(i for i, n in seen.items() if n > 1), dtype=np.int64)


def criterion_match(ids: np.ndarray, offsets: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """Per token: 2 = a post token found in the window's criterion and in no other
    criterion, 1 = found in it but common to several criteria, 0 = otherwise.

    Post tokens are those with a character offset (specials and the criterion have -1).
    """
    post = offsets[:, 0] >= 0
    found = post & np.isin(ids, ids[~post])
    return (found.astype(np.int8) * np.where(np.isin(ids, shared), 1, 2)).astype(np.int8)


def _post_range(offsets: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The window's post-token positions and the char range they cover."""
    ctx = np.flatnonzero(offsets[:, 0] >= 0)
    if len(ctx) == 0:
        return ctx, 0, 0
    return ctx, int(offsets[ctx[0], 0]), int(offsets[ctx[-1], 1])


def window_spans(pair: Any, offsets: np.ndarray) -> np.ndarray:
    """``(k, 2)`` token (start, end) of every gold span wholly inside the window, in text
    order (``k = 0`` for an absent pair or a window without evidence)."""
    found = set()
    ctx, lo_char, hi_char = _post_range(offsets)
    if pair.label == 1 and len(ctx):
        for span in pair.spans:
            if span.start >= lo_char and span.end <= hi_char:
                inside = ctx[(offsets[ctx, 1] > span.start) & (offsets[ctx, 0] < span.end)]
                if len(inside):
                    found.add((int(inside[0]), int(inside[-1])))
    return np.array(sorted(found), dtype=np.int32).reshape(-1, 2)


def window_targets(pair: Any, offsets: np.ndarray,
                   spans: np.ndarray | None = None) -> tuple[float, int, int]:
    """``(cls_target, start_token, end_token)`` of one window (see :class:`WindowSet`).

    ``spans``: the window's :func:`window_spans`, when the caller has them already.
    Never raises: a span cut by the window edge, or a pair whose evidence could not be
    located, simply yields no span target.
    """
    ctx, lo_char, hi_char = _post_range(offsets)
    if pair.label == 0:
        return 0.0, 0, 0
    if not pair.spans or len(ctx) == 0:
        return float(not pair.spans), 0, 0
    spans = window_spans(pair, offsets) if spans is None else spans
    if len(spans):
        return 1.0, int(spans[0, 0]), int(spans[0, 1])
    overlaps = any(s.start < hi_char and s.end > lo_char for s in pair.spans)
    return float(overlaps), 0, 0


def clear_memory_cache() -> None:
    """Forget in-memory features (tests use this to exercise the disk cache)."""
    _MEMORY.clear()
