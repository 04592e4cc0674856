"""`launch status`, `launch best`, `launch export`: read the database, never print a password."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig

LAUNCH = Path(sys.executable).parent / "launch"
SECRET = "An0therSecret"
pytestmark = pytest.mark.postgres


def _launch(*args, cwd):
    return subprocess.run([str(LAUNCH), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.fixture
def finished_study(pg_url, tmp_path):
    url = pg_url.replace("postgres@", f"postgres:{SECRET}@", 1)
    stages = (StageConfig(name="s1", trials=6, epochs=3, patience=3, pruner="asha"),
              StageConfig(name="s2", trials=3, epochs=3, patience=3, narrow_from="s1", top_k=2))
    o = CampaignOverrides(objective="simulated", sim={"epoch_s": 0.01})
    create_campaign(url, experiment="r", agents=["evidence", "criteria"], stages=stages, n_workers=2,
                    overrides=o)
    out = _launch("worker", "--study", "r.evidence.s1", "--index", "0", "--storage", url,
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return url, tmp_path


def test_status_best_export(finished_study):
    url, cwd = finished_study
    out = _launch("status", "--storage", url, cwd=cwd)
    assert out.returncode == 0 and SECRET not in out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4  # criteria (never run) sorts first
    assert lines[0].startswith("r.criteria.s1  [....................] 0/6  complete=0")
    assert lines[2].startswith("r.evidence.s1  [####################] ")
    assert lines[3].startswith("r.evidence.s2  [####################] ")
    assert re.match(r"r\.evidence\.s1  \[#{20}\] \d+/6  complete=\d+ pruned=\d+ running=0 "
                    r"failed=0 waiting=0  best=0\.\d{4}  trials/h=[\d.]+  eta=0m00s  workers=0$",
                    lines[2]), lines[2]
    best = json.loads(_launch("best", "--study", "r.evidence.s1", "--storage", url,
                              cwd=cwd).stdout)
    assert best["state"] == "COMPLETE" and best["agent"] == "evidence" and best["params"]
    out = _launch("export", "--study", "r.evidence.s1", "--out", str(cwd / "ex"), "--top-k", "2",
                  "--storage", url, cwd=cwd)
    assert out.returncode == 0 and SECRET not in out.stdout
    trials = json.loads((cwd / "ex" / "trials.json").read_text())
    assert len(trials) >= 6 and json.loads((cwd / "ex" / "best.json").read_text()) == best
    top = json.loads((cwd / "ex" / "top_k.json").read_text())
    assert len(top) <= 2 and top[0]["value"] == best["value"]
    rows = list(csv.DictReader((cwd / "ex" / "trials.csv").read_text().splitlines()))
    assert [int(r["number"]) for r in rows] == [t["number"] for t in trials]
    assert "lr" in rows[0]
    for path in (cwd / "ex").iterdir():
        assert SECRET not in path.read_text()


def test_user_errors_are_one_line(finished_study):
    url, cwd = finished_study
    out = _launch("best", "--study", "r.criteria.s1", "--storage", url, cwd=cwd)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: study r.criteria.s1 has no complete trial yet — "
                                  "wait for workers (see `launch status`)")
    out = _launch("export", "--study", "r.nope.s1", "--out", "x", "--storage", url, cwd=cwd)
    assert out.returncode == 2 and out.stderr.startswith("error: no study named 'r.nope.s1'")
    (cwd / "empty").mkdir()
    out = _launch("status", cwd=cwd / "empty")
    assert out.returncode == 2 and "no storage file at runs/optuna.db" in out.stderr
