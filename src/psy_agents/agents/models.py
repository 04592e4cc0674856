"""The agents' networks: one or two HF encoders plus a classification and/or span head.

Every model's ``forward(batch)`` returns a dict with ``cls`` (``(B,)`` logits, symptom shown
in the window) and/or ``start``/``end`` (``(B, T)`` logits; position 0 = no answer).
Pooling (``cls``/``mean``) and head depth/width/dropout come from the TrainConfig.
This module imports torch at import time: only the training code imports it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from psy_agents.agents.backbones import new_encoder


def mlp(d_in: int, d_out: int, *, layers: int, hidden: int, dropout: float) -> nn.Sequential:
    """``layers`` hidden blocks (Linear, GELU, Dropout) of width ``hidden``, then Linear."""
    mods: list[nn.Module] = []
    width = d_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    mods.append(nn.Linear(width, d_out))
    return nn.Sequential(*mods)


def pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``(B, T, H)`` token states -> ``(B, H)``: the CLS state, the masked mean or max.

    ``max`` keeps the strongest occurrence of each feature anywhere in the pair, so one
    evidence sentence in a long window is not averaged away.
    """
    if how == "cls":
        return states[:, 0]
    if how == "max":
        return states.masked_fill(mask.unsqueeze(-1) == 0, -1e4).amax(dim=1)
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


def _encode(encoder: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    kwargs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if "token_type_ids" in batch:
        kwargs["token_type_ids"] = batch["token_type_ids"]
    return encoder(**kwargs).last_hidden_state


class AgentModel(nn.Module):
    """Encoder(s) + heads. ``encoders`` holds one encoder, or two for ``fuse=True`` (joint).

    Args:
        cfg: the TrainConfig (pooling, head_layers, head_hidden, dropout).
        source: the resolved backbone (directory or hub id).
        heads: a subset of ``("cls", "span")``.
        fuse: joint agent: a second encoder reads the pair for the span head, and the first
            encoder's pooled vector, projected, is added to every one of its token states.
    """

    def __init__(self, cfg: Any, source: str, heads: tuple[str, ...], fuse: bool = False):
        super().__init__()
        self.heads = heads
        self.pooling = cfg.pooling
        self.fuse = fuse
        n_enc = 2 if fuse else 1
        self.encoders = nn.ModuleList(new_encoder(source, dropout=cfg.dropout)
                                      for _ in range(n_enc))
        hidden = self.encoders[0].config.hidden_size
        shape = {"layers": cfg.head_layers, "hidden": cfg.head_hidden, "dropout": cfg.dropout}
        self.cls_head = mlp(hidden, 1, **shape) if "cls" in heads else None
        self.span_head = mlp(hidden, 2, **shape) if "span" in heads else None
        self.fusion = nn.Linear(hidden, hidden) if fuse else None

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at ``lr * head_lr_multiplier`` (everything but the encoders)."""
        enc = {id(p) for p in self.encoders.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        states = _encode(self.encoders[0], batch)
        out: dict[str, torch.Tensor] = {}
        pooled = pool(states, batch["attention_mask"], self.pooling)
        if self.cls_head is not None:
            out["cls"] = self.cls_head(pooled).squeeze(-1)
        if self.span_head is not None:
            if self.fuse:
                states = _encode(self.encoders[1], batch) + self.fusion(pooled).unsqueeze(1)
            else:
                # The pooled pair vector gives every token the window's gist (and makes the
                # pooling choice matter to span-only agents too).
                states = states + pooled.unsqueeze(1)
            logits = self.span_head(states)
            # Padding can never be an answer; CLS (position 0) stays the no-answer slot.
            pad = batch["attention_mask"] == 0
            out["start"] = logits[..., 0].masked_fill(pad, -1e4)
            out["end"] = logits[..., 1].masked_fill(pad, -1e4)
        return out
