"""`launch bench calibration` end to end: real training of the tiny model on a small
synthetic folder, every decision rule chosen on val and scored on test; the printed table
must be the JSON's figures, and each rule's test figure what its thresholds give on the
saved test scores."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from click.testing import CliRunner

from psy_agents.cli.main import cli
from psy_agents.data.synth import write_synthetic
from psy_agents.training.calibrate import METHODS, decision_metrics, fit_decision


@pytest.mark.slow  # two one-epoch trainings of the tiny model on 60 posts: ~30 s
def test_bench_calibration_scores_every_rule_on_test_from_val_choices(tmp_path):
    data, out = tmp_path / "data", tmp_path / "calibration.json"
    write_synthetic(data, n_posts=60, seed=1)
    res = CliRunner().invoke(cli, [
        "bench", "calibration", "--seeds", "2", "--epochs", "1", "--fix", "max_length=128",
        "--fix", "stride=32", "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"),
        "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert [s["seed"] for s in saved["seeds"]] == [0, 1]
    for seed in saved["seeds"]:
        val, test = seed["scores"]["val"], seed["scores"]["test"]
        for method in METHODS:
            decision = fit_decision(method, val["symptoms"], val["labels"], val["probs"],
                                    posts=val["posts"])
            got = decision_metrics(decision, test["symptoms"], np.array(test["labels"]),
                                   test["probs"])["symptom_macro_f1"]
            assert seed["test_f1"][method] == pytest.approx(got)
    lines = res.output.splitlines()
    for method in METHODS:
        values = [s["test_f1"][method] for s in saved["seeds"]]
        row = next(line for line in lines if line.startswith(f"{method:8s} "))
        assert row.split()[1:4] == [f"{statistics.fmean(values):.4f}", "±",
                                    f"{statistics.stdev(values):.4f}"], row
