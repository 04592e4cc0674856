"""A training step never waits on the device: no host synchronization per step.

Counted on the CPU with :func:`psy_agents.training.syncs.count_syncs` in ``"python"`` mode:
every ``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()``, ``float()``/``int()``/``bool()``
of a tensor, ``nonzero``/``masked_select``/``unique`` and boolean-mask indexing made by code
outside torch (ours and transformers') while ``train_epoch`` runs, for every agent on
data/sample with the tiny model. The one read allowed is the epoch's mean loss, after the
last step. Where a GPU is lent, ``count_syncs("cuda")`` counts what torch itself does too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psy_agents.agents.backbones import load_tokenizer, resolve_backbone
from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.data.features import build_windows
from psy_agents.training.batching import (
    batches,
    collate,
    pack,
    plan_epoch,
    to_device,
    unpack,
)
from psy_agents.training.config import TrainConfig
from psy_agents.training.evaluate import evaluate
from psy_agents.training.loop import train_epoch
from psy_agents.training.run import prepare
from psy_agents.training.syncs import count_syncs

# A slice of the sample, short windows and small batches: several steps in a few seconds,
# and (cls_neg_fraction) batches where the span branch runs on some rows, all or none.
SETTINGS = {"max_length": 64, "stride": 16, "batch_size": 8, "train_fraction": 0.05,
            "cls_neg_fraction": 0.5, "device": "cpu", "epochs": 1, "dropout": 0.0}


@pytest.fixture(scope="module")
def runs(sample_data):
    return {agent: prepare(TrainConfig(agent=agent, **SETTINGS), sample_data)
            for agent in AGENT_NAMES}


def _steps(run) -> int:
    plan = plan_epoch(run.train_ws, run.spec.heads, run.cfg, allowed=run.allowed, epoch=0)
    return len(batches(run.train_ws.lengths[plan.index], run.cfg.batch_size, shuffle=True))


@pytest.mark.parametrize("agent", AGENT_NAMES)
def test_a_training_epoch_reads_the_device_once_after_its_last_step(agent, runs):
    run = runs[agent]
    steps = _steps(run)
    assert steps >= 4  # enough steps that a per-step sync could not hide in the one read
    with count_syncs() as syncs:
        loss, seen = train_epoch(run, 0)
    assert seen > 0 and np.isfinite(loss)
    # the one allowed read: the epoch's mean loss, in loop.py, once per epoch
    assert len(syncs) == 1, syncs.by_site()
    (event,) = syncs.events
    assert event.kind == "__float__" and event.where.startswith("loop.py:"), event


def test_the_span_branch_runs_on_a_subset_without_reading_the_device(runs):
    """The share agent's batches mix rows the span loss counts and rows it does not; the
    forward + loss of such a batch (index_select with a host index) makes no sync."""
    run = runs["share"]
    ws = run.train_ws
    has = np.flatnonzero(ws.has_span)[:3]
    rows = np.concatenate([has, np.flatnonzero(~ws.has_span)[:3]])
    span_mask = np.isin(rows, has)
    for mask in (span_mask, np.zeros(len(rows), dtype=bool), np.ones(len(rows), dtype=bool)):
        batch = to_device(collate(ws, rows, pad_id=run.pad_id, span_mask=mask), "cpu")
        with count_syncs() as syncs:
            loss = run.spec.loss(run.model(batch), batch, run.cfg, run.pos_weight)
            loss.backward()
        assert len(syncs) == 0, syncs.by_site()
        assert batch["span_rows"].tolist() == np.flatnonzero(mask).tolist()


@pytest.mark.parametrize("agent", ["criteria", "share"])
def test_an_evaluation_copies_to_the_host_once(agent, runs, sample_data):
    """Every batch's outputs (and decoded spans) stay on the device until the last batch:
    one ``.cpu()`` per evaluation, however many batches it has."""
    run = runs[agent]
    cfg = run.cfg.replace(eval_batch_size=8)
    pairs = run.eval_pairs[:40]
    tok = load_tokenizer(resolve_backbone(cfg.backbone, sample_data))
    ws = build_windows(pairs, tok, max_length=cfg.max_length, stride=cfg.stride)
    assert len(ws) > 3 * cfg.eval_batch_on("cpu")  # several batches
    with count_syncs() as syncs:
        metrics = evaluate(run.model, pairs, ws, heads=run.spec.heads, cfg=cfg, device="cpu",
                           pad_id=run.pad_id)
    assert metrics
    # .cpu().numpy() of the concatenated outputs: one copy, on one line
    assert [e.kind for e in syncs.events] == ["cpu", "numpy"], syncs.by_site()
    assert len({e.where for e in syncs.events}) == 1, syncs.by_site()


def test_the_counter_sees_each_kind_of_sync_and_restores_torch():
    t = torch.arange(6.0)
    mask = t > 2
    before = torch.Tensor.__getitem__, torch.Tensor.item, torch.nonzero
    with count_syncs() as syncs:
        float(t[0])
        t.sum().item()
        bool(t.any())
        t.tolist()
        t[mask]
        t[1:3]  # plain slicing: no sync
        torch.nonzero(t)
        t.cpu()
    assert [e.kind for e in syncs.events] == [
        "__float__", "item", "__bool__", "tolist", "__getitem__", "torch.nonzero", "cpu"]
    assert all(e.where.startswith("test_train_syncs.py:") for e in syncs.events)
    assert (torch.Tensor.__getitem__, torch.Tensor.item, torch.nonzero) == before
    assert "__getitem__" not in vars(torch.Tensor)  # the inherited slot is back, no shadow


def test_a_packed_batch_unpacks_to_the_same_arrays(runs):
    """The CUDA path copies a batch as one array per dtype; cut back, every entry is the
    array it was (checked here on the host, where the same pack/unpack runs)."""
    run = runs["joint"]
    batch = collate(run.train_ws, np.arange(5), pad_id=run.pad_id, span_mask=[1, 0, 1, 0, 0],
                    pad_multiple=8)
    packed = pack(batch)
    assert len(packed.flats) == len({v.dtype for v in batch.values()
                                     if isinstance(v, np.ndarray)}) <= 3
    back = unpack({k: torch.from_numpy(v) for k, v in packed.flats.items()}, packed)
    assert back.keys() == batch.keys()
    for k, v in batch.items():
        if isinstance(v, np.ndarray):
            assert back[k].numpy().dtype == v.dtype and np.array_equal(back[k].numpy(), v), k
        else:
            assert back[k] == v, k
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["span_width"] % 8 == 0
