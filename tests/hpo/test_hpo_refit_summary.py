"""A refit with real training ends with its test figure, its interval and the baseline.

One worker runs a two-stage chain on `launch data synth --n-posts 40` (tiny model, real
training, one epoch per trial): s1 with one trial, then a refit of its best config with two
seeds. The refit's metrics.json carries each seed's 95 % bootstrap intervals over posts and
the TF-IDF + LR baseline on the same test split; `launch status` prints the line built from
them under the refit's row, and `launch report` of the refit study shows it. Each seed's test value lies in its own interval, and the
baseline figure is the one `launch baseline --split test` gives on the same data.
"""

from __future__ import annotations

import html
import json
import subprocess

import pytest

from psy_agents.data.prepare import prepare_data
from psy_agents.data.synth import write_synthetic
from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig
from psy_agents.training.baseline import run_baseline
from tests.reliability.helpers import launch_argv, launch_env, run_launch

pytestmark = pytest.mark.slow  # ~40 s: three one-epoch trainings and a worker start-up
FIXED = {"max_length": 128, "stride": 32, "batch_size": 8, "grad_accum_steps": 1,
         "lr": 3e-3, "device": "cpu"}
STAGES = (StageConfig(name="s1", trials=1, epochs=1, patience=1),
          StageConfig(name="refit", seeds=2, epochs=1, patience=1, refit_from="s1"))


def test_the_refit_summary_has_intervals_and_the_baseline(tmp_path):
    data = tmp_path / "data"
    write_synthetic(data, n_posts=40, seed=0)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_campaign(url, experiment="rs", agents=["criteria"], stages=STAGES, n_workers=1,
                    overrides=CampaignOverrides(objective="train", train=FIXED), data_dir=data)
    worker = subprocess.run(
        launch_argv("worker", "--study", "rs.criteria.s1", "--index", "0", "--storage", url,
                    "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
                    "--cache-dir", str(tmp_path / "cache")),
        cwd=tmp_path, env=launch_env({"OMP_NUM_THREADS": "1"}), capture_output=True,
        text=True, timeout=400)
    assert worker.returncode == 0, worker.stderr[-3000:]

    summary = json.loads((tmp_path / "runs" / "rs" / "refit" / "criteria" /
                          "metrics.json").read_text())
    values = summary["metrics"]["value"]["values"]
    assert len(values) == 2 and len(summary["intervals"]) == 2
    for value, intervals in zip(values, summary["intervals"], strict=True):
        low, high = intervals["symptom_macro_f1"]
        assert 0 <= low <= value <= high <= 1, (value, intervals)
    expected = run_baseline(prepare_data(data), "test").criteria.metrics["symptom_macro_f1"]
    assert summary["baseline"]["value"] == pytest.approx(expected)

    status = run_launch(["status", "--experiment", "rs", "--storage", url], cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    refit_row = next(i for i, line in enumerate(lines) if line.startswith("rs.criteria.refit"))
    mean = summary["metrics"]["value"]["mean"]
    line = lines[refit_row + 1]
    assert line.startswith(f"  test symptom_macro_f1 {mean:.4f} ± "), line
    assert "over 2 seeds; 95 % interval over posts [" in line
    assert line.endswith(f"; baseline (TF-IDF + LR) {summary['baseline']['value']:.4f}"), line
    # ... and the HTML report of the refit study shows the same line in its summary table
    page = tmp_path / "refit.html"
    report = run_launch(["report", "--study", "rs.criteria.refit", "--storage", url,
                         "--out", str(page)], cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert (f"<tr><th>test result (refit)</th><td>{html.escape(line.strip())}</td></tr>"
            in page.read_text())
