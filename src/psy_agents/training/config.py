"""The resolved configuration of one training run (one HPO trial, or `launch train`).

Every sampled hyperparameter is a field here and every field changes training: a test
checks that none is ignored. Built from a params.json, a trial's params or flags through
:func:`TrainConfig.from_dict`, which rejects unknown keys and wrong types.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.config import from_mapping
from psy_agents.training.calibrate import DEFAULT_METHOD

# The agent table's names (``Literal[("a", "b")]`` is ``Literal["a", "b"]``).
AgentName = Literal[AGENT_NAMES]  # type: ignore[valid-type]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Units are in the names where they are not obvious."""

    agent: AgentName = "criteria"
    # "tiny" (built from the data, cached), "minilm" (bundled offline), a hub name or a dir.
    backbone: str = "tiny"
    max_length: int = 256
    stride: int = 64
    # Defaults suit the tiny model trained from scratch on a CPU (`launch train` demo);
    # pretrained backbones want lr ~5e-5 (the HPO space covers both).
    lr: float = 1e-3
    head_lr_multiplier: float = 1.0
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = 0.1
    batch_size: int = 32
    grad_accum_steps: int = 1
    max_grad_norm: float = 1.0
    epochs: int = 8
    patience: int = 3
    dropout: float = 0.1
    # Dropout on the attention probabilities. Off by default: on a CPU its random masks
    # over every (head, token, token) made a tiny-model step 1.7x slower (bench, 1 thread),
    # and without it the fused attention kernel can run.
    attention_dropout: float = 0.0
    pooling: Literal["cls", "mean", "max"] = "cls"
    head_layers: int = 1
    head_hidden: int = 256
    # Mark post tokens that also occur in the criterion description with a learned input
    # embedding (the "exact match" feature of reading-comprehension models).
    criterion_match: bool = True
    # What the span head reads: the token states, or those plus a BiGRU over them.
    span_context: Literal["gru", "none"] = "gru"
    # criteria loss: plain BCE, BCE with positive-class weight, or focal.
    cls_loss: Literal["bce", "weighted", "focal"] = "bce"
    focal_gamma: float = 2.0
    # criteria/share/joint: fraction of the windows without the symptom (~89 % of the
    # sample's) the cls head trains on per epoch, drawn afresh each epoch and weighted
    # 1 / fraction in the cls loss; 1.0 = all. Cuts an epoch's cost at the same expected loss.
    cls_neg_fraction: float = 1.0
    # evidence: sampled no-answer windows per positive window.
    neg_ratio: float = 1.0
    max_answer_tokens: int = 64
    # share/joint: loss = w * L_cls + (1 - w) * L_span.
    loss_weight: float = 0.5
    threshold: float = 0.5
    # How decisions are made from scores (symptom thresholds; evidence: the no-answer
    # margin), chosen on the val split at each evaluation: see psy_agents.training.calibrate.
    decision: Literal["fixed", "global", "shrunk", "auto"] = DEFAULT_METHOD
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    # Fraction of the training split used (s0 sanity uses a small slice); 1.0 = all.
    train_fraction: float = 1.0
    # Windows per evaluation batch; 0 = max(4 x batch_size, 32) on CUDA (evaluation keeps
    # no activations for a backward pass, so a larger batch fits where training's does, in
    # fewer launches), max(batch_size, 32) elsewhere (on the 2-core CPU box, 128-window
    # batches evaluated 10-13 % slower than 32: more padding, no launches to save).
    eval_batch_size: int = 0
    # Padded batch widths are rounded up to a multiple of this many tokens, so that a GPU
    # reuses the kernels it picked for a width; 0 = 64 on CUDA, 8 elsewhere (on the 2-core
    # CPU box an epoch at 8 took 0.7-1.0x the time of one without rounding, best of 3-4).
    pad_multiple: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("max_length", self.max_length >= 32, ">= 32"),
            ("stride", 0 <= self.stride < self.max_length // 2, ">= 0 and < max_length / 2"),
            ("lr", self.lr > 0, "> 0"),
            ("head_lr_multiplier", self.head_lr_multiplier > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("grad_accum_steps", self.grad_accum_steps >= 1, ">= 1"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("patience", self.patience >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("attention_dropout", 0 <= self.attention_dropout < 1, "in [0, 1)"),
            ("head_layers", self.head_layers >= 1, ">= 1"),
            ("head_hidden", self.head_hidden >= 1, ">= 1"),
            ("focal_gamma", self.focal_gamma >= 0, ">= 0"),
            ("cls_neg_fraction", 0 < self.cls_neg_fraction <= 1, "in (0, 1]"),
            ("neg_ratio", self.neg_ratio >= 0, ">= 0"),
            ("max_answer_tokens", self.max_answer_tokens >= 1, ">= 1"),
            ("loss_weight", 0 <= self.loss_weight <= 1, "in [0, 1]"),
            ("threshold", 0 < self.threshold < 1, "in (0, 1)"),
            ("train_fraction", 0 < self.train_fraction <= 1, "in (0, 1]"),
            ("eval_batch_size", self.eval_batch_size >= 0, ">= 0 (0: by device)"),
            ("pad_multiple", self.pad_multiple >= 0, ">= 0 (0: 64 on CUDA, else 8)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"The value of `{name}` is {getattr(self, name)!r}, but must be {rule}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "params") -> TrainConfig:
        """Build from an untrusted mapping; raises ``ConfigError`` with one clear line."""
        return from_mapping(cls, data, source=source)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (validated like the original)."""
        return dataclasses.replace(self, **changes)

    def eval_batch_on(self, device: str) -> int:
        """Windows per evaluation batch: ``eval_batch_size``, or its default on ``device``
        (``max(4 x batch_size, 32)`` on CUDA, ``max(batch_size, 32)`` elsewhere)."""
        scale = 4 if str(device).startswith("cuda") else 1
        return self.eval_batch_size or max(scale * self.batch_size, 32)

    def pad_multiple_on(self, device: str) -> int:
        """``pad_multiple``, or its default on ``device`` (64 on CUDA, 8 elsewhere)."""
        return self.pad_multiple or (64 if str(device).startswith("cuda") else 8)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
