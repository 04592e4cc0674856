"""Which decision rule generalizes: each method's thresholds chosen on val, scored on test.

For each seed one model is trained (``run_training``, best val epoch kept); its val and
test scores are computed once, and every method of :data:`calibrate.METHODS` chooses its
thresholds from the same val scores and is scored on the same test posts. What differs
between the methods is the rule alone.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psy_agents.training.calibrate import METHODS, decision_metrics, fit_decision
from psy_agents.training.checkpoint import MODEL_DIR
from psy_agents.training.config import TrainConfig
from psy_agents.training.evaluate import pair_probs
from psy_agents.training.run import run_training
from psy_agents.training.scoring import predict_split


@dataclass(frozen=True)
class SeedResult:
    seed: int
    best_epoch: int
    test_f1: dict[str, float]  # method -> test symptom macro-F1
    val_f1: dict[str, float]  # method -> val symptom macro-F1 (where it was chosen)
    # split -> {"symptoms", "labels", "probs"}: the scores every rule chose from and was
    # scored on, so that another rule can be compared on them without training again
    scores: dict[str, dict[str, list]]


def _scores(model_dir: Path, data: Any, split: str
            ) -> tuple[list[str], list[int], Any, list[str]]:
    """Parallel per-pair symptoms, labels, P(present) and post ids of ``split``."""
    _, _, pairs, ws, pred = predict_split(model_dir, data, split, cache_dir=None)
    return ([p.symptom for p in pairs], [p.label for p in pairs],
            pair_probs(len(pairs), ws, pred), [p.post_id for p in pairs])


def one_seed(cfg: TrainConfig, data: Any, *, cache_dir: Path | None) -> SeedResult:
    """Train ``cfg`` and score every method on its test split."""
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
        res = run_training(cfg, data, output_dir=Path(tmp), cache_dir=cache_dir)
        val = _scores(Path(tmp) / MODEL_DIR, data, "val")
        test = _scores(Path(tmp) / MODEL_DIR, data, "test")
    test_f1, val_f1 = {}, {}
    for method in METHODS:
        decision = fit_decision(method, *val[:3], fixed=cfg.threshold, posts=val[3])
        val_f1[method] = decision_metrics(decision, *val[:3])["symptom_macro_f1"]
        test_f1[method] = decision_metrics(decision, *test[:3])["symptom_macro_f1"]
    scores = {name: {"symptoms": list(sym), "labels": [int(v) for v in y],
                     "probs": [float(v) for v in p], "posts": list(posts)}
              for name, (sym, y, p, posts) in (("val", val), ("test", test))}
    return SeedResult(cfg.seed, res.best_epoch, test_f1, val_f1, scores)


def run_seeds(cfg: TrainConfig, data: Any, seeds: Sequence[int], *, cache_dir: Path | None,
              on_seed: Callable[[SeedResult], None] | None = None) -> list[SeedResult]:
    out = []
    for seed in seeds:
        out.append(one_seed(cfg.replace(seed=seed), data, cache_dir=cache_dir))
        if on_seed is not None:
            on_seed(out[-1])
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summary_lines(results: Sequence[SeedResult]) -> list[str]:
    """Per method: test macro-F1 mean ± std over seeds, and its difference to ``fixed``
    (mean ± std of the per-seed differences: the seeds are paired)."""
    lines = [f"{'method':8s} {'test macro-F1':>18s} {'minus fixed':>18s} {'val (chosen on)':>16s}"]
    for method in METHODS:
        test = mean_std([r.test_f1[method] for r in results])
        diff = mean_std([r.test_f1[method] - r.test_f1["fixed"] for r in results])
        val = mean_std([r.val_f1[method] for r in results])
        lines.append(f"{method:8s} {test[0]:10.4f} ± {test[1]:.4f} {diff[0]:+10.4f} ± "
                     f"{diff[1]:.4f} {val[0]:8.4f} ± {val[1]:.4f}")
    return lines
