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
from psy_agents.training.calibrate import (
    Decision,
    choose_margin,
    decision_from_metrics,
    decision_metrics,
    fit_decision,
)
from psy_agents.training.metrics import best_match, span_metrics, symptom_metrics
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


def pair_spans(pairs: Sequence[Any], ws: WindowSet,
               pred: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """Per pair: the widest margin of a best span over no-answer among its windows (-inf
    for a pair without windows), and that span's text ("" without windows)."""
    best: dict[int, int] = {}
    for w, p in enumerate(ws.pair_index):
        if p not in best or pred["margin"][w] > pred["margin"][best[p]]:
            best[p] = w
    margins = np.full(len(pairs), -np.inf)
    texts: list[str] = []
    for i, pair in enumerate(pairs):
        w = best.get(i)
        if w is None:
            texts.append("")
            continue
        margins[i] = pred["margin"][w]
        offs = ws.offsets[w]
        texts.append(pair.text[offs[pred["s"][w], 0]:offs[pred["e"][w], 1]])
    return margins, texts


def _span_part(pairs: Sequence[Any], margins: np.ndarray, texts: list[str],
               decision: Decision | None) -> dict[str, float]:
    """Span metrics at the decision's no-answer margin, or at the margin that maximizes
    the mean of span F1 and no-answer accuracy on ``pairs`` when ``decision`` is None
    (span F1 alone would answer everything); ``fixed/...`` figures at margin 0 beside them."""
    pos = [i for i, p in enumerate(pairs) if p.label == 1 and p.spans]
    neg = np.array([i for i, p in enumerate(pairs) if p.label == 0], dtype=int)
    golds = [[pairs[i].text[s.start:s.end] for s in pairs[i].spans] for i in pos]

    def at(margin: float) -> dict[str, float]:
        answered = margins > margin
        return span_metrics([texts[i] if answered[i] else None for i in pos], golds,
                            answered[neg])

    if decision is not None:
        margin = decision.margin
    else:  # each positive pair's F1 if answered is fixed: only the cut moves
        f1_if = np.array([best_match(texts[i], g)[0] for i, g in zip(pos, golds, strict=True)])
        pos_m = margins[np.array(pos, dtype=int)]

        def score(m: float) -> float:
            f1 = float(np.where(pos_m > m, f1_if, 0.0).mean()) if len(pos) else 0.0
            return (f1 + float(np.mean(margins[neg] <= m))) / 2 if len(neg) else f1

        margin = choose_margin(margins, score)
    out = {**at(margin), "no_answer_margin": float(margin)}
    out.update({f"fixed/{k}": v for k, v in at(0.0).items()})
    return out


def pair_probs(n_pairs: int, ws: WindowSet, pred: dict[str, np.ndarray]) -> np.ndarray:
    """Post-level P(present) per pair: the sigmoid of the max ``cls`` logit over its windows."""
    pair_logit = np.full(n_pairs, -np.inf)
    np.maximum.at(pair_logit, ws.pair_index, pred["cls"])
    return 1 / (1 + np.exp(-pair_logit))


def pair_metrics(pairs: Sequence[Any], ws: WindowSet, pred: dict[str, np.ndarray],
                 heads: tuple[str, ...], threshold: float, *,
                 decision: Decision | None = None, method: str = "fixed") -> dict[str, float]:
    """Symptom metrics (cls head) and span metrics (span head) over ``pairs``.

    Decisions (symptom thresholds, the no-answer margin) are ``decision``'s, or, when it is
    None, chosen on ``pairs`` themselves by ``method`` (:mod:`psy_agents.training.calibrate`;
    the val split's own, as the HPO objective reads it). The chosen values are in the
    metrics (``threshold/<SYMPTOM>``, ``threshold_default``, ``no_answer_margin``), and the
    figures at the fixed ``threshold`` and margin 0 beside them (``fixed/...``).
    """
    metrics: dict[str, float] = {}
    if "cls" in heads:
        probs = pair_probs(len(pairs), ws, pred)
        symptoms, labels = [p.symptom for p in pairs], [p.label for p in pairs]
        fixed = symptom_metrics(symptoms, labels, probs, threshold)
        chosen = decision or fit_decision(method, symptoms, labels, probs, fixed=threshold,
                                          posts=[p.post_id for p in pairs])
        metrics.update({k: v for k, v in fixed.items() if "auroc" in k})
        metrics.update({f"fixed/{k}": v for k, v in fixed.items() if "auroc" not in k})
        metrics.update(decision_metrics(chosen, symptoms, labels, probs))
    if "span" in heads:
        if decision is None and method == "fixed":
            decision = Decision("fixed", threshold)
        metrics.update(_span_part(pairs, *pair_spans(pairs, ws, pred), decision))
    return metrics


def fitted_decision(metrics: dict[str, float], method: str) -> Decision:
    """The decision :func:`pair_metrics` chose (or applied), read back from its metrics."""
    return decision_from_metrics(metrics, method)


def predict(model: Any, ws: WindowSet, *, heads: tuple[str, ...], cfg: Any, device: str,
            pad_id: int, progress: ProgressFactory | None = None) -> dict[str, np.ndarray]:
    """:func:`predict_windows` with the batch size, precision and padding of ``cfg``."""
    return predict_windows(model, ws, heads=heads, batch_size=cfg.eval_batch_on(device),
                           pad_id=pad_id, device=device, bf16=cfg.bf16,
                           max_answer=cfg.max_answer_tokens,
                           pad_multiple=cfg.pad_multiple_on(device), max_width=cfg.max_length,
                           progress=progress)


def evaluate(model: Any, pairs: Sequence[Any], ws: WindowSet, *, heads: tuple[str, ...],
             cfg: Any, device: str, pad_id: int, progress: ProgressFactory | None = None,
             calibrate_on: tuple[Sequence[Any], WindowSet] | None = None) -> dict[str, float]:
    """All metrics of ``model`` on ``pairs`` (whose windows are ``ws``); ``progress``
    draws a bar over the batches (None: no bar). Decisions are chosen by ``cfg.decision``
    on ``calibrate_on`` (val pairs and windows: a refit scoring the test split) or, when
    it is None, on ``pairs`` themselves (see :func:`pair_metrics`)."""
    decision = None
    if calibrate_on is not None:
        val_pairs, val_ws = calibrate_on
        val_pred = predict(model, val_ws, heads=heads, cfg=cfg, device=device, pad_id=pad_id)
        val = pair_metrics(val_pairs, val_ws, val_pred, heads, cfg.threshold,
                           method=cfg.decision)
        decision = fitted_decision(val, cfg.decision)
    pred = predict(model, ws, heads=heads, cfg=cfg, device=device, pad_id=pad_id,
                   progress=progress)
    return pair_metrics(pairs, ws, pred, heads, cfg.threshold, decision=decision,
                        method=cfg.decision)
