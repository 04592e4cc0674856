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
from psy_agents.training.batching import iter_eval_batches, to_device
from psy_agents.training.metrics import best_spans, span_metrics, symptom_metrics


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
    import torch

    if device.startswith("cuda") and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def predict_windows(model: Any, ws: WindowSet, *, heads: tuple[str, ...], batch_size: int,
                    pad_id: int, device: str, bf16: bool, max_answer: int,
                    pad_to: int | None = None,
                    progress: ProgressFactory | None = None) -> dict[str, np.ndarray]:
    """Per-window outputs: ``cls`` logits and/or ``margin``/``s``/``e`` of the best span."""
    import torch

    n = len(ws)
    out = {"cls": np.full(n, -np.inf), "margin": np.full(n, -np.inf),
           "s": np.zeros(n, dtype=np.int64), "e": np.zeros(n, dtype=np.int64)}
    model.eval()
    bar = open_bar(progress, "eval", math.ceil(n / batch_size))
    with torch.no_grad(), autocast(device, bf16), closing(bar):
        for rows, batch in iter_eval_batches(ws, batch_size, pad_id, pad_to):
            res = model(to_device(batch, device))
            if "cls" in heads:
                out["cls"][rows] = res["cls"].float().cpu().numpy()
            if "span" in heads:
                start = res["start"].float().cpu().numpy()
                end = res["end"].float().cpu().numpy()
                valid = np.zeros(start.shape, dtype=bool)
                for i, r in enumerate(rows):
                    valid[i, :len(ws.offsets[r])] = ws.offsets[r][:, 0] >= 0
                score, s, e = best_spans(start, end, valid, max_answer)
                out["margin"][rows] = score - (start[:, 0] + end[:, 0])
                out["s"][rows], out["e"][rows] = s, e
            bar.update(1)
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
    pred = predict_windows(model, ws, heads=heads, batch_size=max(cfg.batch_size, 32),
                           pad_id=pad_id, device=device, bf16=cfg.bf16,
                           max_answer=cfg.max_answer_tokens, progress=progress)
    return pair_metrics(pairs, ws, pred, heads, cfg.threshold)
