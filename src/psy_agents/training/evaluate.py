"""Evaluation: run a model over every window, aggregate windows to pairs, compute metrics.

Post-level symptom probability = max over the pair's windows. The predicted span of a pair
is the best valid span (start <= end, at most ``max_answer_tokens``) of the window where it
beats that window's no-answer (CLS) score by the widest margin; if it beats it nowhere, the
answer is "no answer".

A ``progress`` factory (see :data:`ProgressFactory`), when given, draws a bar advanced once
per batch; the default None draws nothing (the HPO worker, whose output is a log file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import closing, nullcontext
from typing import Any, Protocol

import numpy as np

from psy_agents.data.features import WindowSet
from psy_agents.lazy import lazy_import
from psy_agents.training.batching import iter_eval_batches, to_device
from psy_agents.training.metrics import span_metrics, symptom_metrics
from psy_agents.training.spans import best_spans

torch = lazy_import("torch")


class ProgressBar(Protocol):
    """What a progress factory returns (a tqdm bar is one)."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...


# progress(description, total batches) -> a bar; its ``update(1)`` runs once per batch and
# reads nothing from the device, so a bar adds no host synchronisation to a step.
ProgressFactory = Callable[[str, int], ProgressBar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        del n

    def close(self) -> None:
        """Nothing to close."""


def open_bar(progress: ProgressFactory | None, desc: str, total: int) -> ProgressBar:
    """``progress(desc, total)``, or a bar that draws nothing when ``progress`` is None."""
    return progress(desc, total) if progress is not None else _NoBar()


def autocast(device: str, bf16: bool) -> Any:
    """bf16 autocast on CUDA when asked; plain fp32 elsewhere (CPU bf16 is slow and lossy)."""
    if device.startswith("cuda") and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def valid_tokens(ws: WindowSet, rows: np.ndarray, width: int) -> np.ndarray:
    """``(len(rows), width)`` bool: the tokens of the post (a span may only cover those)."""
    valid = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        valid[i, :len(ws.offsets[r])] = ws.offsets[r][:, 0] >= 0
    return valid


def window_outputs(res: dict[str, Any], batch: dict[str, Any], heads: tuple[str, ...],
                   max_answer: int) -> Any:
    """One batch's per-window results as a ``(B, k)`` float32 tensor on the device: the
    ``cls`` logit (cls head), then ``margin``, ``s``, ``e`` of the best span (span head)."""
    cols = []
    if "cls" in heads:
        cols.append(res["cls"].float())
    if "span" in heads:
        start, end = res["start"].float(), res["end"].float()
        score, s, e = best_spans(start, end, batch["valid"], max_answer)
        # s, e < 2**24: exact in float32
        cols += [score - (start[:, 0] + end[:, 0]), s.float(), e.float()]
    return torch.stack(cols, dim=1)


def predict_windows(model: Any, ws: WindowSet, *, heads: tuple[str, ...], batch_size: int,
                    pad_id: int, device: str, bf16: bool, max_answer: int,
                    pad_to: int | None = None, pad_multiple: int = 1,
                    max_width: int | None = None,
                    progress: ProgressFactory | None = None) -> dict[str, np.ndarray]:
    """Per-window outputs: ``cls`` logits and/or ``margin``/``s``/``e`` of the best span.

    Spans are decoded on the device, and the results of every batch stay there until the
    last one: one copy to the host per call, not one per batch.
    """
    n = len(ws)
    out = {"cls": np.full(n, -np.inf), "margin": np.full(n, -np.inf),
           "s": np.zeros(n, dtype=np.int64), "e": np.zeros(n, dtype=np.int64)}
    model.eval()
    parts, order = [], []
    bar = open_bar(progress, "eval", math.ceil(n / batch_size))
    with torch.no_grad(), autocast(device, bf16), closing(bar):
        for rows, batch in iter_eval_batches(ws, batch_size, pad_id, pad_to, pad_multiple,
                                             max_width):
            if "span" in heads:
                batch["valid"] = valid_tokens(ws, rows, batch["input_ids"].shape[1])
            on_device = to_device(batch, device)
            parts.append(window_outputs(model(on_device), on_device, heads, max_answer))
            order.append(rows)
            bar.update(1)
    if not parts:
        return out
    table = torch.cat(parts).cpu().numpy()  # the evaluation's one copy to the host
    rows = np.concatenate(order)
    col = 0
    if "cls" in heads:
        out["cls"][rows] = table[:, 0]
        col = 1
    if "span" in heads:
        out["margin"][rows] = table[:, col]
        out["s"][rows] = table[:, col + 1].astype(np.int64)
        out["e"][rows] = table[:, col + 2].astype(np.int64)
    return out


def _pair_answers(pairs: Sequence[Any], ws: WindowSet,
                  pred: dict[str, np.ndarray]) -> list[str | None]:
    """The predicted span text per pair, ``None`` for no answer."""
    best: dict[int, int] = {}
    for w, p in enumerate(ws.pair_index):
        if p not in best or pred["margin"][w] > pred["margin"][best[p]]:
            best[p] = w
    answers: list[str | None] = []
    for i, pair in enumerate(pairs):
        w = best.get(i)
        if w is None or not pred["margin"][w] > 0:
            answers.append(None)
            continue
        offs = ws.offsets[w]
        answers.append(pair.text[offs[pred["s"][w], 0]:offs[pred["e"][w], 1]])
    return answers


def pair_metrics(pairs: Sequence[Any], ws: WindowSet, pred: dict[str, np.ndarray],
                 heads: tuple[str, ...], threshold: float) -> dict[str, float]:
    """Symptom metrics (cls head) and span metrics (span head) over ``pairs``."""
    metrics: dict[str, float] = {}
    if "cls" in heads:
        pair_logit = np.full(len(pairs), -np.inf)
        np.maximum.at(pair_logit, ws.pair_index, pred["cls"])
        probs = 1 / (1 + np.exp(-pair_logit))
        metrics.update(symptom_metrics([p.symptom for p in pairs], [p.label for p in pairs],
                                       probs, threshold))
    if "span" in heads:
        answers = _pair_answers(pairs, ws, pred)
        pos = [i for i, p in enumerate(pairs) if p.label == 1 and p.spans]
        neg = [i for i, p in enumerate(pairs) if p.label == 0]
        metrics.update(span_metrics(
            [answers[i] for i in pos],
            [[pairs[i].text[s.start:s.end] for s in pairs[i].spans] for i in pos],
            [answers[i] is not None for i in neg]))
    return metrics


def evaluate(model: Any, pairs: Sequence[Any], ws: WindowSet, *, heads: tuple[str, ...],
             cfg: Any, device: str, pad_id: int,
             progress: ProgressFactory | None = None) -> dict[str, float]:
    """All metrics of ``model`` on ``pairs`` (whose windows are ``ws``); ``progress``
    draws a bar over the batches (None: no bar)."""
    pred = predict_windows(model, ws, heads=heads, batch_size=cfg.eval_batch_on(device),
                           pad_id=pad_id, device=device, bf16=cfg.bf16,
                           max_answer=cfg.max_answer_tokens,
                           pad_multiple=cfg.pad_multiple_on(device), max_width=cfg.max_length,
                           progress=progress)
    return pair_metrics(pairs, ws, pred, heads, cfg.threshold)
