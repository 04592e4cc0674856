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
from torch.nn import functional as F

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


_ENCODER_KEYS = ("input_ids", "attention_mask", "token_type_ids", "match")


class SpanContext(nn.Module):
    """A bidirectional GRU over the token states, concatenated to them: ``(B, T, H)`` ->
    ``(B, T, 2H)``. A sentence's first and last tokens then know what the sentence holds
    (a criterion word several tokens away), which a small encoder trained from scratch
    does not learn in a few epochs: on data/sample it took the tiny evidence agent's val
    span F1 from ~0.63 to ~0.88.

    The GRU reads the window in chunks of ``chunk`` tokens, each with ``halo`` tokens of
    context on either side, all chunks side by side in one batch: every token sees at least
    ``halo`` tokens each way (an evidence sentence is a span, so its own words matter most),
    and a GRU step, which runs one after the other, is taken ``chunk + 2 * halo`` times
    instead of once per token. On the 2-core CPU that made the branch ~2x cheaper (a
    bench of the module, 4 windows of 256 tokens: 59 -> 28 ms forward + backward) and it
    learned as well (evidence span F1 0.93 vs 0.90 after 3 epochs). Positions past a
    window's length are zeroed, and chunks sit at fixed positions, so no state depends on
    the batch's padding.
    """

    def __init__(self, hidden: int, chunk: int = 32, halo: int = 16):
        super().__init__()
        self.chunk, self.halo = chunk, halo
        self.gru = nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = states.float() * mask.unsqueeze(-1)
        b, t, h = x.shape
        c, k = self.chunk, self.halo
        n = -(-t // c)  # chunks per window
        x = F.pad(x, (0, 0, k, n * c - t + k))  # (B, k + n*c + k, H)
        chunks = x.unfold(1, c + 2 * k, c).transpose(2, 3).reshape(b * n, c + 2 * k, h)
        # The GRU runs in fp32 with autocast off on every device: CUDA autocast would cast
        # cuDNN's RNN to a 16-bit type, and a recurrence of 48 steps in fp16 without a loss
        # scaler risks underflow. It is a small part of a step (hidden / 2 units).
        with torch.autocast(device_type=chunks.device.type, enabled=False):
            out, _ = self.gru(chunks)
        out = out[:, k:k + c].reshape(b, n * c, -1)[:, :t]  # each chunk's own tokens
        return torch.cat([states, out.to(states.dtype)], dim=-1)


def attention_mask_4d(encoder: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """The ``(B, T)`` padding mask as the encoder's own ``(B, 1, 1, T)`` mask for SDPA
    (True = attend), or unchanged for another attention implementation.

    Given a 2-D mask, transformers asks ``mask.all()`` on every forward to decide whether
    it can drop the mask: a host sync per step. A prepared 4-D mask is used as it is.
    """
    if getattr(encoder.config, "_attn_implementation", None) != "sdpa":
        return mask
    return mask[:, None, None, :].bool()


def _encode(encoder: nn.Module, batch: dict[str, torch.Tensor],
            match: nn.Embedding | None = None) -> torch.Tensor:
    kwargs = {"attention_mask": attention_mask_4d(encoder, batch["attention_mask"])}
    if match is None:
        kwargs["input_ids"] = batch["input_ids"]
    else:  # word embeddings + the criterion-match embedding; the encoder adds positions
        words = encoder.get_input_embeddings()(batch["input_ids"])
        kwargs["inputs_embeds"] = words + match(batch["match"]).to(words.dtype)
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
        self.encoders = nn.ModuleList(new_encoder(source, dropout=cfg.dropout,
                                                  attention_dropout=cfg.attention_dropout)
                                      for _ in range(n_enc))
        hidden = self.encoders[0].config.hidden_size
        shape = {"layers": cfg.head_layers, "hidden": cfg.head_hidden, "dropout": cfg.dropout}
        self.cls_head = mlp(hidden, 1, **shape) if "cls" in heads else None
        self.span_context = None
        if "span" in heads and cfg.span_context == "gru":
            self.span_context = SpanContext(hidden)
        width = 2 * hidden if self.span_context is not None else hidden
        self.span_head = mlp(width, 2, **shape) if "span" in heads else None
        self.fusion = nn.Linear(hidden, hidden) if fuse else None
        # Post tokens that also occur in the criterion get a learned vector added to their
        # input embedding (one for words common to several criteria, one for words of this
        # criterion only): matching the criterion's words is then a lookup, not something
        # attention must discover. Zero-initialized, so a pretrained encoder starts intact.
        self.match = None
        if cfg.criterion_match:
            self.match = nn.Embedding(3, hidden)  # none / common word / criterion-specific
            nn.init.zeros_(self.match.weight)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at ``lr * head_lr_multiplier`` (everything but the encoders)."""
        enc = {id(p) for p in self.encoders.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        states = _encode(self.encoders[0], batch, self.match)
        out: dict[str, torch.Tensor] = {}
        pooled = pool(states, batch["attention_mask"], self.pooling)
        if self.cls_head is not None:
            out["cls"] = self.cls_head(pooled).squeeze(-1)
        if self.span_head is not None:
            out.update(self._span_logits(batch, states, pooled))
        return out

    def _span_logits(self, batch: dict[str, Any], states: torch.Tensor,
                     pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Start/end logits ``(B, T)``. Only the rows ``batch["span_rows"]`` (the windows the
        span loss counts in training, an index computed on the host by ``collate``) go
        through the span branch, trimmed to ``batch["span_width"]`` tokens; the others get
        0. With a cls head that is about a quarter of the windows, and the branch is the
        costly part (the joint agent's second encoder, the GRU): the loss and its gradients
        are the same as computing every row. Without ``span_rows`` every row goes through.
        Which rows and how wide is known on the host, so nothing here reads the device."""
        mask = batch["attention_mask"]
        rows = batch.get("span_rows")
        subset = rows is not None and rows.shape[0] < mask.shape[0]
        if subset:
            if rows.shape[0] == 0:  # no span loss in this batch: nothing to compute
                zero = states.new_zeros(mask.shape).masked_fill(mask == 0, -1e4)
                return {"start": zero, "end": zero}
            width = batch.get("span_width", mask.shape[1])
            batch = {k: v.index_select(0, rows)[:, :width] for k, v in batch.items()
                     if k in _ENCODER_KEYS}
            states = states.index_select(0, rows)[:, :width]
            pooled = pooled.index_select(0, rows)
        if self.fuse:
            states = _encode(self.encoders[1], batch, self.match) + self.fusion(pooled).unsqueeze(1)
        else:
            # The pooled pair vector gives every token the window's gist (and makes the
            # pooling choice matter to span-only agents too).
            states = states + pooled.unsqueeze(1)
        if self.span_context is not None:
            states = self.span_context(states, batch["attention_mask"])
        logits = self.span_head(states)
        if subset:  # back to (B, T, 2): zeros for the rows left out
            logits = F.pad(logits, (0, 0, 0, mask.shape[1] - logits.shape[1]))
            logits = logits.new_zeros(mask.shape + (2,)).index_copy(0, rows, logits)
        # Padding can never be an answer; CLS (position 0) stays the no-answer slot.
        pad = mask == 0
        return {"start": logits[..., 0].masked_fill(pad, -1e4),
                "end": logits[..., 1].masked_fill(pad, -1e4)}
