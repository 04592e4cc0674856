"""The agent table: one :class:`AgentSpec` per agent. A fifth agent is one more entry.

The agent names everywhere (CLI choices, ``TrainConfig.agent``, the search spaces of
:mod:`psy_agents.hpo.spaces`) come from this table. Importing this module is cheap (no
torch): builders and losses import torch when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from psy_agents.errors import ConfigError


def encoder_with_heads(spec: AgentSpec, cfg: Any, source: str) -> Any:
    """The default model builder: :class:`~psy_agents.agents.models.AgentModel`."""
    from psy_agents.agents.models import AgentModel

    return AgentModel(cfg, source, spec.heads, fuse=spec.fuse)


def cls_loss(logits: Any, target: Any, cfg: Any, pos_weight: float,
             weight: Any = None) -> Any:
    """Window classification loss: BCE, BCE weighted by ``pos_weight``, or focal; each
    window's term times ``weight`` (the sampled negatives' 1 / fraction) when given."""
    import torch
    import torch.nn.functional as F

    logits = logits.float()
    # new_full fills on the device: no host-to-device copy (torch.tensor(x, device=...)
    # copies from pageable memory and waits for it).
    pw = logits.new_full((), pos_weight) if cfg.cls_loss == "weighted" else None
    per_window = F.binary_cross_entropy_with_logits(logits, target, reduction="none",
                                                    pos_weight=pw)
    if cfg.cls_loss == "focal":
        p_true = torch.exp(-per_window)  # probability given to the true class
        per_window = (1 - p_true) ** cfg.focal_gamma * per_window
    if weight is not None:
        per_window = per_window * weight
    return per_window.mean()


def span_loss(out: Mapping[str, Any], batch: Mapping[str, Any]) -> Any:
    """Start/end loss over the rows ``batch["span_rows"]`` (every row when absent; 0 if
    the index is empty).

    Each is ``-log`` of the probability given to *any* acceptable position (``start_ok`` /
    ``end_ok``: the starts/ends of all gold spans in the window, or CLS for no answer):
    a post with two evidence sentences is not penalised for finding the second one.
    With one gold span this is the usual cross-entropy. The rows are an index computed on
    the host (``collate``): selecting them reads nothing from the device.
    """
    rows = batch.get("span_rows")
    if rows is not None and rows.shape[0] == 0:
        return out["start"].sum() * 0.0  # keeps the graph alive for accumulation

    def nll(logits: Any, ok: Any) -> Any:
        if rows is not None:
            logits, ok = logits.index_select(0, rows), ok.index_select(0, rows)
        logits = logits.float()
        gold = logits.masked_fill(~ok, float("-inf"))
        return (logits.logsumexp(-1) - gold.logsumexp(-1)).mean()

    return (nll(out["start"], batch["start_ok"]) + nll(out["end"], batch["end_ok"])) / 2


def combined_loss(spec: AgentSpec, out: Mapping[str, Any], batch: Mapping[str, Any],
                  cfg: Any, pos_weight: float) -> Any:
    """The agent's loss: cls, span, or ``w * L_cls + (1 - w) * L_span`` with both heads."""
    parts = {}
    if "cls" in spec.heads:
        parts["cls"] = cls_loss(out["cls"], batch["cls_target"], cfg, pos_weight,
                                batch.get("cls_weight"))
    if "span" in spec.heads:
        parts["span"] = span_loss(out, batch)
    if len(parts) == 2:
        return cfg.loss_weight * parts["cls"] + (1 - cfg.loss_weight) * parts["span"]
    return next(iter(parts.values()))


def _mean_of(*keys: str) -> Callable[[Mapping[str, float]], float]:
    def objective(metrics: Mapping[str, float]) -> float:
        return sum(metrics[k] for k in keys) / len(keys)
    return objective


@dataclass(frozen=True)
class AgentSpec:
    """One agent: what it predicts, how it is built, trained and scored.

    Attributes:
        heads: ``("cls",)``, ``("span",)`` or both.
        fuse: two encoders with the criteria vector fused into the span encoder (joint).
        objective_name: what ``objective`` computes, for logs and study attrs.
        objective: validation metrics -> the value to maximize.
        builder / loss_fn: model builder and loss, overridable per agent.
    """

    name: str
    heads: tuple[str, ...]
    objective_name: str
    objective: Callable[[Mapping[str, float]], float]
    fuse: bool = False
    builder: Callable[..., Any] = encoder_with_heads
    loss_fn: Callable[..., Any] = combined_loss

    def build_model(self, cfg: Any, source: str) -> Any:
        return self.builder(self, cfg, source)

    def loss(self, out: Mapping[str, Any], batch: Mapping[str, Any], cfg: Any,
             pos_weight: float = 1.0) -> Any:
        return self.loss_fn(self, out, batch, cfg, pos_weight)


_BOTH = "mean(symptom_macro_f1, span_f1)"
AGENTS: dict[str, AgentSpec] = {
    "criteria": AgentSpec("criteria", ("cls",), "symptom_macro_f1",
                          _mean_of("symptom_macro_f1")),
    "evidence": AgentSpec("evidence", ("span",), "span_f1", _mean_of("span_f1")),
    "share": AgentSpec("share", ("cls", "span"), _BOTH, _mean_of("symptom_macro_f1", "span_f1")),
    "joint": AgentSpec("joint", ("cls", "span"), _BOTH, _mean_of("symptom_macro_f1", "span_f1"),
                       fuse=True),
}
AGENT_NAMES: tuple[str, ...] = tuple(AGENTS)


def get_agent(name: str) -> AgentSpec:
    """The spec of ``name``; raises ``ConfigError`` naming the valid agents."""
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}", f"use one of: {', '.join(AGENTS)}")
    return AGENTS[name]
