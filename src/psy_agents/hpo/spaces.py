"""Search spaces per agent, sampling, and narrowing (s1 -> s2).

A space is a tuple of :class:`Param`; every name is a ``TrainConfig`` field, so each sampled
value changes training (a test checks this). Conditional parameters (``when``) are sampled
only when the parameter they depend on has the given value — ``focal_gamma`` only matters
for the focal loss, so sampling it otherwise would be an ignored parameter.
:func:`narrow` is a pure function: the same finished trials always give the same space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Value = float | int | str


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter. ``when`` = (other parameter, required value) or None."""

    name: str
    kind: Literal["float", "int", "categorical"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Value, ...] = ()
    when: tuple[str, Value] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Param:
        data = dict(data)
        data["choices"] = tuple(data.get("choices") or ())
        data["when"] = tuple(data["when"]) if data.get("when") else None
        return cls(**data)


Space = tuple[Param, ...]

_COMMON: Space = (
    Param("max_length", "categorical", choices=(128, 192, 256, 384, 512)),
    Param("stride", "categorical", choices=(16, 32, 48)),
    Param("weight_decay", "float", 1e-4, 0.1, log=True),
    Param("warmup_ratio", "float", 0.0, 0.2),
    Param("schedule", "categorical", choices=("linear", "cosine", "constant")),
    Param("batch_size", "categorical", choices=(8, 16, 32)),
    Param("grad_accum_steps", "categorical", choices=(1, 2, 4)),
    Param("dropout", "float", 0.0, 0.3),
    Param("head_layers", "int", 1, 3),
    Param("head_hidden", "categorical", choices=(64, 128, 256, 512)),
)
# Fine-tuning a pretrained encoder wants small steps (BERT-family recipes use 1e-5..1e-4)
# and a head trained from nothing wants larger ones (head_lr_multiplier); the tiny model is
# trained from scratch and learns nothing in a few epochs below ~3e-4 (on data/sample,
# 1e-3..2e-3 work best), so its range starts there. A search over both kinds of backbone
# needs one `lr` distribution: it spans both ranges.
FINETUNE_LR = Param("lr", "float", 1e-5, 1e-4, log=True)
SCRATCH_LR = Param("lr", "float", 3e-4, 3e-3, log=True)
MIXED_LR = Param("lr", "float", FINETUNE_LR.low, SCRATCH_LR.high, log=True)
HEAD_LR = Param("head_lr_multiplier", "float", 1.0, 30.0, log=True)
_POOLING = Param("pooling", "categorical", choices=("cls", "mean"))
_CLS_LOSS: Space = (
    Param("cls_loss", "categorical", choices=("bce", "weighted", "focal")),
    Param("focal_gamma", "float", 0.5, 4.0, when=("cls_loss", "focal")),
)
_NEG_RATIO = Param("neg_ratio", "float", 0.25, 4.0, log=True)
_LOSS_WEIGHT = Param("loss_weight", "float", 0.2, 0.8)

# Agents are data: what each one's heads and loss actually read, keyed by the agent table's
# names (psy_agents.agents.registry; a test checks the keys match).
AGENT_EXTRAS: dict[str, Space] = {
    "criteria": (_POOLING, *_CLS_LOSS),
    "evidence": (_NEG_RATIO,),
    "share": (_POOLING, *_CLS_LOSS, _NEG_RATIO, _LOSS_WEIGHT),
    "joint": (_POOLING, *_CLS_LOSS, _NEG_RATIO, _LOSS_WEIGHT),
}


def agent_space(agent: str, backbones: Sequence[str], epochs: int, *,
                sample_epochs: bool = True) -> Space:
    """The full (s1 / max) space of ``agent``.

    ``backbone`` is searched when several are given; the epoch cap is searched between half
    the stage's epochs and all of them when the stage has at least 4 epochs and
    ``sample_epochs`` (the stage's setting) is True. Without it every trial's ``epochs`` is
    the stage cap and only the pruner and patience end a trial early — which also makes
    rung values comparable: the learning-rate schedule (``training.run.prepare``) spans
    ``cfg.epochs``, so every trial of the stage has the same schedule up to each rung. The
    learning rates follow the backbones (:func:`learning_rates`).
    """
    if agent not in AGENT_EXTRAS:
        raise ValueError(f"unknown agent {agent!r}; valid: {', '.join(AGENT_EXTRAS)}")
    head: list[Param] = []
    if len(backbones) > 1:
        head.append(Param("backbone", "categorical", choices=tuple(backbones)))
    if sample_epochs and epochs >= 4:
        head.append(Param("epochs", "int", math.ceil(epochs / 2), epochs))
    return (*head, *learning_rates(backbones), *_COMMON, *AGENT_EXTRAS[agent])


def learning_rates(backbones: Sequence[str]) -> Space:
    """The learning-rate parameters for ``backbones``: the from-scratch range for ``tiny``
    alone; the fine-tuning range and a head multiplier for pretrained encoders; the span of
    both (and the multiplier) when the search mixes them."""
    pretrained = set(backbones) - {"tiny"}
    if not pretrained:
        return (SCRATCH_LR,)
    return (FINETUNE_LR if len(pretrained) == len(set(backbones)) else MIXED_LR, HEAD_LR)


def space_to_json(space: Space) -> list[dict[str, Any]]:
    return [p.to_dict() for p in space]


def space_from_json(data: Sequence[dict[str, Any]]) -> Space:
    return tuple(Param.from_dict(d) for d in data)


def suggest(trial, space: Space) -> dict[str, Value]:
    """Sample ``space`` on an Optuna ``trial``; returns {name: value} of the active params."""
    params: dict[str, Value] = {}
    for p in space:
        if p.when is not None and params.get(p.when[0]) != p.when[1]:
            continue
        if p.kind == "categorical":
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            params[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return params


def top_trials(finished: Sequence[tuple[dict[str, Value], float]], k: int
               ) -> list[dict[str, Value]]:
    """Params of the ``k`` best (highest value) trials; ties keep the earlier trial."""
    order = sorted(range(len(finished)), key=lambda i: (-finished[i][1], i))
    return [finished[i][0] for i in order[:k]]


def _narrow_numeric(p: Param, values: list[float], margin: float) -> Param:
    # low == high is fine for Optuna (a fixed value), so margin 0 with one value is valid.
    scale = math.log if p.log else float
    inverse = math.exp if p.log else float
    lo, hi = scale(min(values)), scale(max(values))
    pad = margin * (scale(p.high) - scale(p.low))
    new_lo = max(p.low, inverse(lo - pad))
    new_hi = min(p.high, inverse(hi + pad))
    if p.kind == "int":
        new_lo, new_hi = math.floor(new_lo), math.ceil(new_hi)
    return Param(p.name, p.kind, new_lo, new_hi, p.log, p.choices, p.when)


def narrow(space: Space, finished: Sequence[tuple[dict[str, Value], float]],
           top_k: int, margin: float) -> Space:
    """The space around the ``top_k`` best of ``finished`` (params, value) pairs.

    Categoricals keep the choices seen in the top-k (original order); numeric ranges become
    the top-k range +- ``margin`` x the original width, measured in log space for log
    parameters, clipped to the original bounds. A parameter absent from every top-k trial
    (a conditional one) keeps its range. Pure and deterministic.
    """
    best = top_trials(finished, top_k)
    out: list[Param] = []
    for p in space:
        seen = [t[p.name] for t in best if p.name in t]
        if not seen:
            out.append(p)
        elif p.kind == "categorical":
            kept = tuple(c for c in p.choices if c in seen)
            out.append(Param(p.name, p.kind, choices=kept, when=p.when))
        else:
            out.append(_narrow_numeric(p, [float(v) for v in seen], margin))
    return tuple(out)
