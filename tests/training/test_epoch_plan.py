"""Which windows an epoch trains on: every one by default; with ``cls_neg_fraction`` all the
windows showing the symptom and a fresh, seeded share of the others, weighted so that an
epoch's cls loss stays an unbiased estimate of the loss over all windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psy_agents.agents.registry import cls_loss
from psy_agents.data.features import WindowSet
from psy_agents.training.batching import collate, plan_epoch
from psy_agents.training.config import TrainConfig

CLS_SPAN = ("cls", "span")


def windows(n: int = 200, n_pos: int = 20, seed: int = 0) -> WindowSet:
    """``n`` windows, the first ``n_pos`` showing the symptom with a span inside, plus two
    positives whose span lies in another window (cls 1, no span)."""
    rng = np.random.default_rng(seed)
    ids = tuple(rng.integers(5, 50, size=rng.integers(8, 30)) for _ in range(n))
    cls = np.zeros(n, dtype=np.float32)
    cls[:n_pos + 2] = 1.0
    start = np.zeros(n, dtype=np.int64)
    start[:n_pos] = 3
    end = np.where(start > 0, 5, 0)
    spans = tuple(np.array([[3, 5]]) if s else np.zeros((0, 2), dtype=np.int64) for s in start)
    return WindowSet(input_ids=ids, token_type_ids=None,
                     offsets=tuple(np.zeros((len(x), 2)) for x in ids),
                     pair_index=np.arange(n), cls_target=cls, start=start, end=end,
                     match=tuple(np.zeros(len(x), dtype=np.int64) for x in ids), spans=spans,
                     n_pairs=n)


def _plan(ws: WindowSet, heads=CLS_SPAN, epoch: int = 0, allowed=None, **kw):
    allowed = np.ones(len(ws), dtype=bool) if allowed is None else allowed
    cfg = TrainConfig(neg_ratio=1.0, seed=3, **kw)
    return plan_epoch(ws, heads, cfg, allowed=allowed, epoch=epoch)


def test_by_default_the_cls_head_trains_on_every_window():
    ws = windows()
    plan = _plan(ws)
    assert np.array_equal(plan.index, np.arange(len(ws)))
    assert np.all(plan.cls_weight == 1.0)
    # the span loss: the 20 windows with a span + 20 sampled no-answer windows
    assert plan.span_mask.sum() == 40 and plan.span_mask[:20].all()


def test_a_fraction_of_the_negatives_is_drawn_afresh_each_epoch_and_weighted():
    ws = windows()
    neg = np.flatnonzero(ws.cls_target == 0)  # 178
    plans = [_plan(ws, epoch=e, cls_neg_fraction=0.25) for e in (0, 1)]
    for plan in plans:
        kept = np.intersect1d(plan.index, neg)
        assert len(kept) == round(0.25 * len(neg))
        # every window showing the symptom, with or without a span in it
        assert set(np.flatnonzero(ws.cls_target > 0)) <= set(plan.index)
        weight = dict(zip(plan.index.tolist(), plan.cls_weight.tolist(), strict=True))
        assert all(weight[i] == 1.0 for i in range(22))
        # the kept negatives stand for all of them: their weights add up to the count
        assert sum(weight[i] for i in kept) == pytest.approx(len(neg))
        # span rows: all 20 span windows + 20 no-answer windows among the kept ones
        assert plan.span_mask.sum() == 40 and set(plan.index[plan.span_mask][:20]) == set(range(20))
        assert len(plan.index) == 22 + len(kept)
    assert not np.array_equal(plans[0].index, plans[1].index)  # fresh per epoch
    again = _plan(ws, epoch=1, cls_neg_fraction=0.25)  # and the same on a resumed run
    assert np.array_equal(again.index, plans[1].index)
    assert np.array_equal(again.span_mask, plans[1].span_mask)


def test_the_fraction_keeps_to_the_train_fraction_and_leaves_span_agents_alone():
    ws = windows()
    allowed = np.zeros(len(ws), dtype=bool)
    allowed[::2] = True
    plan = _plan(ws, allowed=allowed, cls_neg_fraction=0.5)
    assert allowed[plan.index].all()
    n_neg = int(((ws.cls_target == 0) & allowed).sum())
    assert len(plan.index) == int((ws.cls_target[allowed] > 0).sum()) + round(0.5 * n_neg)
    # evidence has no cls head: the fraction changes nothing
    span_only = _plan(ws, heads=("span",), cls_neg_fraction=0.5)
    assert np.array_equal(span_only.index, _plan(ws, heads=("span",)).index)


def test_the_weights_reach_the_cls_loss_of_every_kind():
    ws = windows()
    plan = _plan(ws, cls_neg_fraction=0.25)
    rows = plan.index[[0, 1, 30, 40]]
    batch = collate(ws, rows, pad_id=0, cls_weight=plan.cls_weight[[0, 1, 30, 40]])
    w = torch.from_numpy(batch["cls_weight"])
    assert w.tolist() == [1.0, 1.0, pytest.approx(178 / 44), pytest.approx(178 / 44)]
    logits = torch.tensor([0.3, -1.2, 0.8, -0.4])
    target = torch.from_numpy(batch["cls_target"])
    for kind in ("bce", "weighted", "focal"):
        cfg = TrainConfig(cls_loss=kind)
        plain = cls_loss(logits, target, cfg, 3.0)
        per_window = [float(cls_loss(logits[i:i + 1], target[i:i + 1], cfg, 3.0)) for i in range(4)]
        weighted = cls_loss(logits, target, cfg, 3.0, w)
        assert float(plain) == pytest.approx(sum(per_window) / 4)
        assert float(weighted) == pytest.approx(sum(p * float(x) for p, x in zip(per_window, w, strict=True)) / 4)
    # no weight given (evaluation batches): ones
    assert collate(ws, rows, pad_id=0)["cls_weight"].tolist() == [1.0] * 4


def test_the_fraction_is_checked():
    with pytest.raises(ValueError, match="cls_neg_fraction"):
        TrainConfig(cls_neg_fraction=0.0)
    with pytest.raises(ValueError, match="cls_neg_fraction"):
        TrainConfig(cls_neg_fraction=1.5)
