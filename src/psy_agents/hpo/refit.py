"""The refit stage: the best config of the source stage, retrained with several seeds.

The refit study's budget is its number of seeds; each trial is one seed (seed index = the
original trial number, so a retried seed keeps its seed), trained for the full epochs with
no early stopping and evaluated on the test split — the only place the test split is used.
The final epoch's test metrics count (no epoch is selected on test). When the seeds are
done, exactly one worker — the one that wins an exclusive-create claim file — writes
``<runs>/<experiment>/refit/<agent>/metrics.json`` (mean ± std per metric over seeds) and
``config.json``; each seed's model goes to ``seed-<k>/``.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from psy_agents.agents.registry import get_agent
from psy_agents.errors import StorageError
from psy_agents.hpo.history import finished_in_order, source_trials, trial_score
from psy_agents.hpo.objective import Objective
from psy_agents.hpo.simulated import epoch_value, run_simulated
from psy_agents.hpo.spec import REFIT_SUMMARY_ATTR, StudySpec, load_spec, study_name
from psy_agents.paths import refit_dir
from psy_agents.training.checkpoint import MODEL_DIR
from psy_agents.training.scoring import baseline_value, score_model

REFIT_PARAMS_ATTR = "psy_refit_params"


def best_params(storage, study, spec: StudySpec) -> dict[str, Any]:
    """Params of the best of the source stage's first ``budget`` finished trials (stored in
    the refit study on first use so every worker refits the same config)."""
    stored = study.user_attrs.get(REFIT_PARAMS_ATTR)
    if stored is not None:
        return stored
    stage = spec.stage_config
    source, source_spec = load_spec(storage, study_name(spec.experiment, spec.agent,
                                                        stage.refit_from))
    first = source_trials(source, source_spec.budget)
    complete = [t for t in first or () if t.value is not None]
    if first is None or not complete:
        raise StorageError(f"stage {stage.refit_from} of {spec.agent} is not finished "
                           f"({len(finished_in_order(source))} of {source_spec.budget} trials)",
                           "run its workers first")
    best = max(complete, key=lambda t: (trial_score(t), -t.number))
    chosen = dict(best.params) | {"source_trial": best.number}
    study.set_user_attr(REFIT_PARAMS_ATTR, chosen)
    return chosen


class RefitObjective(Objective):
    """One seed of the refit; returns the final epoch's test value."""

    def __init__(self, spec: StudySpec, *, params: dict[str, Any], **kwargs) -> None:
        # Nothing is sampled in a refit (an empty space): the config is fixed.
        super().__init__(spec, (), **kwargs)
        self.chosen = dict(params)  # with the source trial's number, for the summary
        self.params = {k: v for k, v in params.items() if k != "source_trial"}

    @property
    def out_dir(self) -> Path:
        """This agent's refit outputs under the worker's runs folder."""
        return refit_dir(self.settings.runs_dir, self.spec.experiment, self.spec.agent)

    def _run(self, trial, params, original: int):
        seed_dir = self.out_dir / f"seed-{original}"
        ckpt = self.checkpoint_dir(original)
        stage = self.spec.stage_config
        never = lambda value, epoch: False  # noqa: E731 - refit is never pruned
        if self.spec.objective == "simulated":
            sim = dict(self.spec.sim) | {"run_seed": original}
            space = self.spec.search_space
            out = run_simulated(self.params, space, epochs=stage.epochs, sim=sim,
                                checkpoint_dir=ckpt, report=never, wait=self.stop.wait)
            test = epoch_value(self.params, space, stage.epochs - 1, sim | {"split": "test"})
            metrics = {"value": test}
            epochs_run, resumed = out.epochs_run, out.resumed_from_epoch
        else:
            # keep="last": the saved model is the final epoch's, never one picked on test;
            # its decisions were chosen on val (see training.run.prepare).
            result = self._train(self.params, original, ckpt, never, eval_split="test",
                                 output_dir=seed_dir, keep="last")
            final = result.history[-1]
            metrics = {"value": final.value, **final.metrics}
            epochs_run, resumed = result.epochs_run, result.resumed_from_epoch
            scored = score_model(seed_dir / MODEL_DIR, self.data(), "test",
                                 cache_dir=self.settings.cache)
            trial.set_user_attr("test_intervals", {k: [v.low, v.high]
                                                   for k, v in scored.intervals.items()})
        trial.set_user_attr("params", self.params)
        trial.set_user_attr("seed", self.spec.base_seed + original)
        trial.set_user_attr("test_metrics", metrics)
        return metrics["value"], epochs_run, resumed, "completed"


def refit_study(storage, name: str, spec: StudySpec, **objective_kwargs):
    """(study, objective) for the refit study ``name``: nothing is sampled or pruned, and
    each trial trains the source stage's best config with its own seed. The caller runs
    trials until ``spec.budget`` are COMPLETE, then calls :func:`write_summary`."""
    import optuna

    study = optuna.load_study(study_name=name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=spec.base_seed),
                              pruner=optuna.pruners.NopPruner())
    params = best_params(storage, study, spec)
    return study, RefitObjective(spec, study_name=name, params=params, **objective_kwargs)


def write_summary(study, objective: RefitObjective) -> bool:
    """Write metrics.json + config.json if this process wins the claim; True if it wrote."""
    from optuna.trial import TrialState

    spec, params = objective.spec, objective.chosen
    seeds = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                   key=lambda t: t.number)
    out = objective.out_dir
    out.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: exactly one worker, even on a shared filesystem, writes the summary
        os.close(os.open(out / ".claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    per_metric: dict[str, list[float]] = {}
    for t in seeds:
        for key, value in t.user_attrs.get("test_metrics", {}).items():
            per_metric.setdefault(key, []).append(float(value))
    summary = {
        "agent": spec.agent, "study": study.study_name, "split": "test",
        "seeds": [t.user_attrs.get("seed") for t in seeds], "source_trial": params.get("source_trial"),
        "metrics": {k: {"mean": statistics.fmean(v),
                        "std": statistics.stdev(v) if len(v) > 1 else 0.0, "values": v}
                    for k, v in per_metric.items()},
    }
    config = {"agent": spec.agent, "params": {k: v for k, v in params.items() if k != "source_trial"},
              "stage": spec.stage, "train_defaults": spec.train_defaults,
              "backbones": list(spec.backbones), "data_hash": spec.data_hash,
              "split_hash": spec.split_hash}
    if spec.objective == "train":
        summary.update(_beside(objective, seeds))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    study.set_user_attr(REFIT_SUMMARY_ATTR,
                        summary_line(summary, get_agent(spec.agent).objective_name))
    return True


def _beside(objective: RefitObjective, seeds) -> dict[str, Any]:
    """What stands beside the seeds' mean: each seed's 95 % intervals over posts, and the
    TF-IDF + LR baseline on the same test split (trained on the same train split)."""
    value, metrics = baseline_value(objective.data(), "test", objective.spec.agent)
    return {"intervals": [t.user_attrs.get("test_intervals", {}) for t in seeds],
            "baseline": {"value": value, "metrics": metrics}}


def summary_line(summary: dict[str, Any], objective_name: str) -> str:
    """``test <objective> <mean> ± <std> over <n> seeds; 95 % interval over posts [<low>,
    <high>] (mean of the seeds' bounds); baseline (TF-IDF + LR) <value>``; the interval
    where the objective has one (the symptom F1s), the baseline for the real objective."""
    value = summary["metrics"].get("value", {"mean": float("nan"), "std": 0.0, "values": []})
    line = (f"test {objective_name} {value['mean']:.4f} ± {value['std']:.4f} over "
            f"{len(value['values'])} seed{'s' if len(value['values']) != 1 else ''}")
    bounds = [i[objective_name] for i in summary.get("intervals", []) if objective_name in i]
    if bounds:
        low, high = (statistics.fmean(b[k] for b in bounds) for k in (0, 1))
        line += f"; 95 % interval over posts [{low:.4f}, {high:.4f}] (mean of the seeds' bounds)"
    if "baseline" in summary:
        line += f"; baseline (TF-IDF + LR) {summary['baseline']['value']:.4f}"
    return line
