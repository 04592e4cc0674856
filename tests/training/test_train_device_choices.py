"""Choices made per device: fused AdamW and TF32 on CUDA only, padded widths rounded to a
multiple (64 on CUDA), evaluation at a larger batch. Pure functions, checked on the CPU; the
fused optimizer itself also runs here (torch has a fused CPU AdamW) and must step as the
default one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psy_agents.training.batching import collate, padded_width
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import make_optimizer, matmul_precision, optimizer_kwargs
from tests.training.test_epoch_plan import windows


def test_fused_adamw_and_tf32_are_chosen_on_cuda_only():
    assert optimizer_kwargs("cuda") == optimizer_kwargs("cuda:1") == {"fused": True}
    assert optimizer_kwargs("cpu") == {}
    assert matmul_precision("cuda:0") == "high"
    assert matmul_precision("cpu") is None


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 3)
        self.norm = torch.nn.LayerNorm(3)

    def head_parameters(self):
        return list(self.norm.parameters())


def test_the_cuda_optimizer_steps_like_the_default_one():
    """The AdamW ``make_optimizer`` builds for CUDA, run on CPU tensors: a real fused
    AdamW (same groups, same lr) whose step matches the default implementation's."""
    cfg = TrainConfig(lr=1e-2)
    models, opts = [], []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = _Model()
        models.append(model)
        opts.append(make_optimizer(cfg, model, device))
    assert not opts[0].defaults.get("fused") and opts[1].defaults["fused"] is True
    x = torch.randn(5, 4)
    for model, opt in zip(models, opts, strict=True):
        for _ in range(3):
            model.norm(model.body(x)).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_defaults_of_the_evaluation_batch_and_the_pad_multiple():
    assert TrainConfig(batch_size=16).eval_batch_on("cuda") == 64
    assert TrainConfig(batch_size=4).eval_batch_on("cuda:0") == 32
    assert TrainConfig(batch_size=48).eval_batch_on("cpu") == 48
    assert TrainConfig(batch_size=16).eval_batch_on("cpu") == 32
    assert TrainConfig(batch_size=16, eval_batch_size=100).eval_batch_on("cuda") == 100
    assert TrainConfig(batch_size=16, eval_batch_size=100).eval_batch_on("cpu") == 100
    assert TrainConfig().pad_multiple_on("cuda:0") == 64
    assert TrainConfig().pad_multiple_on("cpu") == 8
    assert TrainConfig(pad_multiple=1).pad_multiple_on("cuda") == 1
    with pytest.raises(ValueError, match="The value of `eval_batch_size` is -1"):
        TrainConfig(eval_batch_size=-1)


def test_padded_widths_round_up_but_never_past_the_cap():
    assert [padded_width(n, 64) for n in (1, 64, 65, 200)] == [64, 64, 128, 256]
    assert padded_width(200, 64, cap=230) == 230  # max_length 230: the table ends there
    assert padded_width(240, 64, cap=230) == 240  # longer than the cap: never cut
    assert padded_width(37, 1) == 37


def test_collate_rounds_the_batch_and_the_span_rows_widths():
    ws = windows()
    rows = np.arange(6)
    lengths = [len(ws.input_ids[r]) for r in rows]
    span_mask = np.array([0, 1, 0, 1, 0, 0], dtype=bool)
    batch = collate(ws, rows, pad_id=0, span_mask=span_mask, pad_multiple=64, max_width=512)
    assert batch["input_ids"].shape[1] == padded_width(max(lengths), 64)
    assert batch["span_rows"].tolist() == [1, 3]
    assert batch["span_width"] == padded_width(max(lengths[1], lengths[3]), 64)
    plain = collate(ws, rows, pad_id=0, span_mask=span_mask)
    assert plain["input_ids"].shape[1] == max(lengths)
    width = plain["input_ids"].shape[1]  # the extra columns are padding only
    assert np.array_equal(batch["input_ids"][:, :width], plain["input_ids"])
    assert not batch["attention_mask"][:, width:].any()
    none = collate(ws, rows, pad_id=0, span_mask=np.zeros(6, dtype=bool))
    assert none["span_rows"].tolist() == [] and none["span_width"] == 0
