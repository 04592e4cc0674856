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
from psy_agents.lazy import lazy_import

torch = lazy_import("torch")

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


def padded_width(longest: int, multiple: int, cap: int | None = None) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` (>= 1), but not past ``cap``
    (the run's ``max_length``, which the model's position table holds) unless ``longest``
    itself is."""
    width = -(-longest // multiple) * multiple
    return width if cap is None else max(longest, min(width, cap))


def collate(ws: WindowSet, rows: np.ndarray, *, pad_id: int, pad_to: int | None = None,
            span_mask: np.ndarray | None = None, cls_weight: np.ndarray | None = None,
            pad_multiple: int = 1, max_width: int | None = None) -> dict[str, Any]:
    """Pad the windows ``rows`` to the batch's longest, rounded up to ``pad_multiple`` but
    not past ``max_width`` (see :func:`padded_width`), or to ``pad_to``, as numpy arrays.

    Besides the arrays the model and losses read, the batch holds the span branch's index,
    computed here on the host so that a training step never reads it from the device:
    ``span_rows`` (int64 positions of the rows whose ``span_mask`` is set) and
    ``span_width`` (a Python int: their longest window, rounded up like the batch width).
    """
    lengths = np.array([len(ws.input_ids[r]) for r in rows], dtype=np.int64)
    width = pad_to or padded_width(int(lengths.max()), pad_multiple, max_width)
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
        n = lengths[i]
        ids[i, :n] = ws.input_ids[r]
        mask[i, :n] = 1
        match[i, :n] = ws.match[r]
        if types is not None:
            types[i, :n] = ws.token_type_ids[r]
    batch: dict[str, Any] = {
        "input_ids": ids, "attention_mask": mask, "match": match,
        "cls_target": ws.cls_target[rows], "start": ws.start[rows], "end": ws.end[rows],
        "start_ok": start_ok, "end_ok": end_ok}
    if types is not None:
        batch["token_type_ids"] = types
    batch["span_mask"] = (np.ones(len(rows), dtype=bool) if span_mask is None
                          else np.asarray(span_mask, dtype=bool))
    batch["cls_weight"] = (np.ones(len(rows), dtype=np.float32) if cls_weight is None
                           else np.asarray(cls_weight, dtype=np.float32))
    span_rows = np.flatnonzero(batch["span_mask"]).astype(np.int64)
    batch["span_rows"] = span_rows
    batch["span_width"] = (min(width, padded_width(int(lengths[span_rows].max()), pad_multiple,
                                                   max_width))
                           if len(span_rows) else 0)
    return batch


@dataclass(frozen=True)
class Packed:
    """A batch's arrays as one flat host array per dtype (``flats``), how to cut them back
    (``layout``: key -> (dtype, offset, shape)), and its non-array entries (``scalars``)."""

    flats: dict[str, np.ndarray]
    layout: dict[str, tuple[str, int, tuple[int, ...]]]
    scalars: dict[str, Any]


def pack(batch: dict[str, Any]) -> Packed:
    """Concatenate the batch's arrays per dtype, so that it crosses to the device in one
    copy per dtype (3 here: int64, bool, float32) instead of one per array."""
    groups: dict[str, list[str]] = {}
    scalars = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray):
            groups.setdefault(v.dtype.str, []).append(k)
        else:
            scalars[k] = v
    flats, layout = {}, {}
    for dtype, keys in groups.items():
        offset = 0
        for k in keys:
            layout[k] = (dtype, offset, batch[k].shape)
            offset += batch[k].size
        flats[dtype] = np.concatenate([batch[k].ravel() for k in keys])
    return Packed(flats, layout, scalars)


def unpack(flats: dict[str, Any], packed: Packed) -> dict[str, Any]:
    """The batch again, its arrays as views into ``flats`` (tensors, wherever they live)."""
    out = dict(packed.scalars)
    for k, (dtype, offset, shape) in packed.layout.items():
        n = int(np.prod(shape, dtype=np.int64))
        out[k] = flats[dtype][offset:offset + n].reshape(shape)
    return out


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """The batch's arrays as tensors on ``device``; other entries (ints) as they are.

    On a CPU the tensors share the arrays' memory. On CUDA the batch is packed (one array
    per dtype), pinned and copied with ``non_blocking=True``: the host goes on to launch
    the step while the copies run, and the copies are ordered before the step's kernels on
    the same stream. The pinned buffers stay valid until their copies finish (torch's
    pinned-memory allocator records the copy's stream before reusing a buffer).
    """
    if not str(device).startswith("cuda"):
        return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                for k, v in batch.items()}
    packed = pack(batch)
    flats = {dtype: torch.from_numpy(flat).pin_memory().to(device, non_blocking=True)
             for dtype, flat in packed.flats.items()}
    return unpack(flats, packed)


def iter_eval_batches(ws: WindowSet, batch_size: int, pad_id: int,
                      pad_to: int | None = None,
                      pad_multiple: int = 1,
                      max_width: int | None = None) -> Iterator[tuple[np.ndarray, dict]]:
    """``(rows, batch)`` over every window, length-sorted for little padding."""
    for rows in batches(ws.lengths, batch_size, shuffle=False):
        yield rows, collate(ws, rows, pad_id=pad_id, pad_to=pad_to, pad_multiple=pad_multiple,
                            max_width=max_width)
