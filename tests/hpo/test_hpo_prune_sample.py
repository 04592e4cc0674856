"""ASHA prunes real training: an s1 run of the evidence agent on data/sample.

`launch hpo --stage s1` with the tiny model and the real objective (not the simulated one),
cut to 4 trials x 3 epochs so that it fits the suite (1-2 min alone on the 2-core box in
earlier sessions; 8.4 min while two other trainings shared it). The sampler seed is fixed by the study name,
so the trials' parameters are the same each run. s1 runs every trial to its cap unless the
pruner stops it (no sampled `epochs`), and ASHA's first rung is after 2 epochs: a trial
below the best there is pruned with 2 epochs reported, while the completed ones report 3.

The same run checks the disk lifecycle with real training (DESIGN §5 "Disk"): afterwards
no resume checkpoint remains, the study keeps the best-epoch models of its top-k (s1 keeps
3) COMPLETE trials and nothing else, and `launch eval` on the best one reproduces the
trial's value — it is the best epoch's model. (Checkpoints surviving a kill and a
preemption: tests/hpo/test_hpo_models.py and tests/reliability/test_chaos.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.data.prepare import prepare_data
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.stages import load_stages
from psy_agents.paths import checkpoint_dir, model_dir, models_dir
from psy_agents.training.checkpoint import CHECKPOINT
from tests.training.helpers import passing_trivial, trivial_baselines

EPOCHS = 3
# The window and batch settings are held (not searched) so that the run's cost does not
# depend on which max_length/stride/batch the sampler draws (512-token windows with stride
# 16 cost several times more); what is searched (lr, dropout, head, loss...) decides.
FIXED = ("--fix", "max_length=256", "--fix", "stride=64", "--fix", "batch_size=16",
         "--fix", "grad_accum_steps=1")


@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_s1_on_the_sample_prunes_a_trial_before_its_last_epoch(tmp_path, repo_root):
    # Floors that every trivial predictor misses (never answering: span F1 0; always
    # answering: no-answer accuracy 0). Measured: span F1 0.96, no-answer accuracy 0.95.
    floors = {"span_f1": 0.8, "no_answer_acc": 0.85}
    val = prepare_data(repo_root / "data" / "sample").split("val")
    assert passing_trivial(floors, trivial_baselines(val)) == []
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {k: v for k, v in os.environ.items() if k not in ("PSY_STORAGE", "MLFLOW_TRACKING_URI")}
    env |= {"PSY_DATA_DIR": str(repo_root / "data" / "sample"),
            "PSY_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "psy_agents.cli.main", "hpo", "--agent", "evidence",
         "--stage", "s1", "--trials", "4", "--epochs", str(EPOCHS), "--workers", "1",
         "--experiment", "prune", "--storage", url, *FIXED],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    study = optuna.load_study(study_name="prune.evidence.s1", storage=open_storage(url))
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    summary = [(t.number, t.state.name, t.params.get("lr"), t.intermediate_values)
               for t in trials]
    assert pruned and all(len(t.intermediate_values) < EPOCHS for t in pruned), summary
    assert complete and all(len(t.intermediate_values) == EPOCHS for t in complete), summary
    # Real learning decides: the best trial beats the floors.
    best_metrics = max(complete, key=lambda t: t.value).user_attrs["metrics"]
    assert {k: best_metrics[k] for k, f in floors.items() if best_metrics[k] < f} == {}, \
        (best_metrics, summary)
    # ... and the trials' first-epoch values differ (no ties at 0)
    assert len({t.intermediate_values[0] for t in trials if t.intermediate_values}) > 1 or \
        len({t.intermediate_values.get(1) for t in trials}) > 1, summary

    runs, name = tmp_path / "runs", "prune.evidence.s1"
    assert checkpoint_dir(runs, "prune", name, 0).parent.is_dir()  # checkpoints were here
    assert list(runs.rglob(CHECKPOINT)) == []  # ... and none of a finished trial remains
    (stage,) = load_stages(["s1"], repo_root / "launch" / "stages.toml")
    top = sorted(complete, key=lambda t: (-t.value, t.number))[: stage.keep_models]
    assert sorted(p.name for p in models_dir(runs, "prune", name).iterdir()) == \
        sorted(f"trial-{t.number}" for t in top), summary
    best = model_dir(runs, "prune", name, top[0].number)
    proc = subprocess.run([sys.executable, "-m", "psy_agents.cli.main", "eval", "--model",
                           str(best), "--split", "val"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    evaluated = json.loads((best / "eval-val.json").read_text())["value"]
    assert evaluated == pytest.approx(top[0].value, abs=1e-6), (evaluated, summary)
