"""A saved model scored on a split, with its interval and the baseline beside it.

``launch eval`` and the refit both report through :func:`score_model`: the metrics at the
decisions chosen on val when the model was trained (``decision.json``), a 95 % bootstrap
interval over posts for the symptom F1s, and :func:`baseline_value`, the TF-IDF + logistic
regression baseline's figure of the same objective on the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psy_agents.agents.backbones import load_tokenizer
from psy_agents.agents.registry import get_agent
from psy_agents.data.features import build_windows
from psy_agents.training.baseline import run_baseline
from psy_agents.training.calibrate import Decision
from psy_agents.training.checkpoint import load_model
from psy_agents.training.evaluate import ProgressFactory, pair_metrics, pair_probs, predict
from psy_agents.training.intervals import Interval, pair_intervals


@dataclass(frozen=True)
class Scored:
    """One model on one split. ``decision_saved`` is False for a model saved without its
    decision (scored at the fixed threshold instead)."""

    agent: str
    split: str
    posts: int
    pairs: int
    objective_name: str
    value: float
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    decision: Decision
    decision_saved: bool

    def value_interval(self) -> Interval | None:
        """The objective's interval where the objective is one interval-carrying metric."""
        return self.intervals.get(self.objective_name)


def predict_split(model_dir: Path, data: Any, split: str, *, cache_dir: Path | None,
                  progress: ProgressFactory | None = None) -> tuple[Any, Any, list, Any, dict]:
    """``(spec, cfg, pairs, windows, per-window outputs)`` of the model saved in
    ``model_dir`` run over ``data``'s ``split`` on the CPU.

    Raises:
        ModelError: ``model_dir`` is not a saved model.
        DataError: ``split`` is not a split of ``data``.
    """
    spec, cfg, model = load_model(model_dir)
    tok = load_tokenizer(str(Path(model_dir) / "encoder0"))
    pairs = data.split(split)
    ws = build_windows(pairs, tok, max_length=cfg.max_length, stride=cfg.stride,
                       data_hash=data.data_hash,
                       cache_dir=None if cache_dir is None else Path(cache_dir) / "features")
    pred = predict(model, ws, heads=spec.heads, cfg=cfg.replace(device="cpu"), device="cpu",
                   pad_id=tok.pad_token_id or 0, progress=progress)
    return spec, cfg, pairs, ws, pred


def score_model(model_dir: Path, data: Any, split: str, *, cache_dir: Path | None,
                progress: ProgressFactory | None = None) -> Scored:
    """Score the model saved in ``model_dir`` on ``data``'s ``split`` (on the CPU) at its
    saved decision. Raises as :func:`predict_split`."""
    spec, cfg, pairs, ws, pred = predict_split(model_dir, data, split, cache_dir=cache_dir,
                                               progress=progress)
    saved = Decision.load(model_dir, cfg.threshold)
    decision = saved or Decision("fixed", cfg.threshold)
    metrics = pair_metrics(pairs, ws, pred, spec.heads, cfg.threshold, decision=decision)
    intervals = pair_intervals(
        pairs, decision.decide([p.symptom for p in pairs], pair_probs(len(pairs), ws, pred)),
        data.symptoms) if "cls" in spec.heads else {}
    return Scored(cfg.agent, split, len({p.post_id for p in pairs}), len(pairs),
                  spec.objective_name, float(spec.objective(metrics)), metrics, intervals,
                  decision, saved is not None)


def baseline_value(data: Any, split: str, agent: str) -> tuple[float, dict[str, float]]:
    """The baseline's figure of ``agent``'s objective on ``split`` (criteria: symptom
    macro-F1, evidence: span F1, share/joint: their mean) and the metrics it comes from."""
    result = run_baseline(data, split)
    metrics = {**result.criteria.metrics, **result.evidence.metrics}
    return float(get_agent(agent).objective(metrics)), metrics
