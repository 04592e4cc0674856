"""Which windows an epoch trains on, in what order, and how they become padded tensors.

Everything random here is seeded from ``(seed, epoch)``, so a run resumed at epoch k sees
exactly the windows and order an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from psy_agents.data.features import WindowSet

_BUCKET_BATCHES = 50  # a bucket holds this many batches: sorted inside, shuffled across


@dataclass(frozen=True)
class EpochPlan:
    """The windows of one epoch: ``index`` into the WindowSet; per entry ``span_mask`` (the
    span loss counts it) and ``cls_weight`` (its weight in the cls loss)."""

    index: np.ndarray
    span_mask: np.ndarray
    cls_weight: np.ndarray


def epoch_rng(seed: int, epoch: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, purpose])


def plan_epoch(ws: WindowSet, heads: tuple[str, ...], cfg: Any, *, allowed: np.ndarray,
               epoch: int) -> EpochPlan:
    """Pick the epoch's windows (``cfg``: the run's TrainConfig, for ``neg_ratio``,
    ``cls_neg_fraction`` and ``seed``).

    Span-only agents train on every window holding a span plus ``round(neg_ratio * n_pos)``
    no-answer windows drawn afresh each epoch. Agents with a cls head train on every window
    showing the symptom and on a ``cls_neg_fraction`` of the others, drawn afresh each epoch
    and weighted ``1 / cls_neg_fraction`` in the cls loss, so the loss stays an unbiased
    estimate of the loss over all windows; the span loss counts on the positive +
    sampled-negative windows among them.

    Args:
        allowed: bool per window (the ``train_fraction`` subset).
    """
    weight = np.ones(len(ws), dtype=np.float32)
    if "cls" in heads and cfg.cls_neg_fraction < 1.0:
        cls_neg = np.flatnonzero((ws.cls_target == 0) & allowed)
        n_keep = max(1, int(round(cfg.cls_neg_fraction * len(cls_neg)))) if len(cls_neg) else 0
        kept = epoch_rng(cfg.seed, epoch, 3).choice(cls_neg, size=n_keep, replace=False)
        allowed = allowed & (ws.cls_target > 0)
        allowed[kept] = True
        weight[cls_neg] = len(cls_neg) / max(n_keep, 1)
    pos = np.flatnonzero(ws.has_span & allowed)
    neg_pool = np.flatnonzero(~ws.has_span & allowed)
    n_neg = min(len(neg_pool), int(round(cfg.neg_ratio * len(pos))))
    neg = np.sort(epoch_rng(cfg.seed, epoch, 1).choice(neg_pool, size=n_neg, replace=False))
    span_rows = np.zeros(len(ws), dtype=bool)
    span_rows[pos] = True
    span_rows[neg] = True
    index = np.flatnonzero(allowed) if "cls" in heads else np.flatnonzero(span_rows)
    return EpochPlan(index=index, span_mask=span_rows[index], cls_weight=weight[index])


def batches(lengths: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0,
            epoch: int = 0) -> list[np.ndarray]:
    """Positions (into ``lengths``) grouped into batches of similar length.

    With ``shuffle``, positions are shuffled, cut into buckets of ``_BUCKET_BATCHES``
    batches, sorted by length inside a bucket (little padding) and the batches shuffled
    (no length order across the epoch). Without it, a plain length sort (evaluation).
    """
    n = len(lengths)
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = epoch_rng(seed, epoch, 2)
    perm = rng.permutation(n)
    out: list[np.ndarray] = []
    bucket = batch_size * _BUCKET_BATCHES
    for lo in range(0, n, bucket):
        chunk = perm[lo:lo + bucket]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def collate(ws: WindowSet, rows: np.ndarray, *, pad_id: int, pad_to: int | None = None,
            span_mask: np.ndarray | None = None,
            cls_weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Pad the windows ``rows`` to the batch's longest (or to ``pad_to``) as numpy arrays."""
    width = pad_to or max(len(ws.input_ids[r]) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64) if ws.token_type_ids else None
    match = np.zeros((len(rows), width), dtype=np.int64)
    # every acceptable start/end position per row: the gold spans, or CLS for no answer
    start_ok = np.zeros((len(rows), width), dtype=bool)
    end_ok = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        spans = ws.spans[r]
        start_ok[i, spans[:, 0] if len(spans) else 0] = True
        end_ok[i, spans[:, 1] if len(spans) else 0] = True
        n = len(ws.input_ids[r])
        ids[i, :n] = ws.input_ids[r]
        mask[i, :n] = 1
        match[i, :n] = ws.match[r]
        if types is not None:
            types[i, :n] = ws.token_type_ids[r]
    batch = {"input_ids": ids, "attention_mask": mask, "match": match, "cls_target": ws.cls_target[rows],
             "start": ws.start[rows], "end": ws.end[rows],
             "start_ok": start_ok, "end_ok": end_ok}
    if types is not None:
        batch["token_type_ids"] = types
    batch["span_mask"] = (np.ones(len(rows), dtype=bool) if span_mask is None
                          else np.asarray(span_mask, dtype=bool))
    batch["cls_weight"] = (np.ones(len(rows), dtype=np.float32) if cls_weight is None
                           else np.asarray(cls_weight, dtype=np.float32))
    return batch


def to_device(batch: dict[str, np.ndarray], device: str) -> dict[str, object]:
    import torch

    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def iter_eval_batches(ws: WindowSet, batch_size: int, pad_id: int,
                      pad_to: int | None = None) -> Iterator[tuple[np.ndarray, dict]]:
    """``(rows, batch)`` over every window, length-sorted for little padding."""
    for rows in batches(ws.lengths, batch_size, shuffle=False):
        yield rows, collate(ws, rows, pad_id=pad_id, pad_to=pad_to)
