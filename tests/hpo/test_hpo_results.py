"""`launch status`, `launch best`, `launch export`: read the database, never print a password."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

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
    assert len(lines) == 4  # criteria (never run) comes first, as in `--agent all`
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


# --- plan order, budget history -----------------------------------------------------------


def _plan_campaign(url: str, experiment: str = "o") -> None:
    """share and criteria, each s0 -> s1 -> s2 -> refit: names that sort alphabetically
    as refit, s0, s1, s2 (no trial runs; the rows only need the specs)."""
    stages = (StageConfig(name="s0", trials=2, epochs=1, patience=1),
              StageConfig(name="s1", trials=3, epochs=2, patience=2, pruner="asha"),
              StageConfig(name="s2", trials=3, epochs=2, patience=2, narrow_from="s1",
                          top_k=2),
              StageConfig(name="refit", seeds=2, epochs=2, patience=2, refit_from="s2"))
    create_campaign(url, experiment=experiment, agents=["share", "criteria"], stages=stages,
                    n_workers=1, overrides=CampaignOverrides(objective="simulated"))


def test_status_lists_studies_in_plan_order_not_alphabetically(pg_url):
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.results import all_status

    _plan_campaign(pg_url, "o")
    _plan_campaign(pg_url, "a")  # another experiment: its block comes first, whole
    names = [r.name for r in all_status(open_storage(pg_url))]
    chain = ("s0", "s1", "s2", "refit")
    # the agents as `--agent all` lists them (criteria before share), then the chain
    assert names == [f"{e}.{a}.{s}" for e in ("a", "o") for a in ("criteria", "share")
                     for s in chain]
    assert [r.name for r in all_status(open_storage(pg_url), "o")] == names[8:]


def test_status_shows_the_budget_history_set_on_a_study(pg_url, tmp_path):
    import optuna

    _plan_campaign(pg_url, "h")
    study = optuna.load_study(study_name="h.criteria.s1", storage=pg_url)
    study.set_user_attr("psy_budget_history", [
        {"budget": 6, "at": "2025-11-29T22:50:00+00:00", "workers": 2},
        {"budget": 10, "at": "2025-11-29T23:05:00+00:00", "workers": 3}])
    once = optuna.load_study(study_name="h.criteria.s2", storage=pg_url)
    once.set_user_attr("psy_budget_history", [
        {"budget": 3, "at": "2025-11-29T22:50:00+00:00", "workers": 1}])
    out = subprocess.run([str(LAUNCH), "status", "--experiment", "h", "--storage", pg_url],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**os.environ, "TZ": "UTC"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("h.criteria.s1  "))
    assert lines[at + 1] == ("  budget: 6 (2 workers, 11-29 22:50) -> "
                             "10 (+3 workers, 11-29 23:05)")
    # one entry (created, never extended) adds no line
    assert lines[at + 2].startswith("h.criteria.s2  ") and lines[at + 3].startswith(
        "h.criteria.refit  ")
    assert sum(line.startswith("  budget:") for line in lines) == 1


def test_budget_history_parsing_and_format():
    from datetime import timezone

    from psy_agents.errors import StorageError
    from psy_agents.hpo.results import BudgetEntry, budget_history, format_budget_history

    raw = [{"budget": 4, "at": "2025-01-02T03:04:05Z", "workers": 1},
           {"budget": 4, "at": "2025-01-02T05:00:00", "workers": 2}]  # no zone: UTC
    entries = budget_history(raw, "s")
    assert entries == (BudgetEntry(4, datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), 1),
                       BudgetEntry(4, datetime(2025, 1, 2, 5, 0, tzinfo=UTC), 2))
    assert budget_history(json.dumps(raw), "s") == entries  # JSON text works too
    assert budget_history(None, "s") == ()
    assert format_budget_history(entries[:1]) is None
    assert format_budget_history(entries, tz=timezone(timedelta(hours=2))) == (
        "  budget: 4 (1 worker, 01-02 05:04) -> 4 (+2 workers, 01-02 07:00)")
    with pytest.raises(StorageError, match=r"study s: user attr psy_budget_history is "
                                           r"malformed \(KeyError"):
        budget_history([{"budget": 4}], "s")


# --- recent rate and ETA (pure, synthetic timestamps) --------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _trial(start_min: float, minutes: float, state: str = "COMPLETE"):
    """A FrozenTrial-like object: state.name and start/complete times (minutes from T0)."""
    start = T0 + timedelta(minutes=start_min)
    return SimpleNamespace(state=SimpleNamespace(name=state), datetime_start=start,
                           datetime_complete=start + timedelta(minutes=minutes))


def _whole_history_rate(trials) -> float:
    """What the ETA used before: every finished trial over first start -> last end."""
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    hours = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done))
    return len(done) / (hours.total_seconds() / 3600)


def test_recent_rate_of_one_steady_worker():
    from psy_agents.hpo.results import eta_seconds, recent_rate

    trials = [_trial(i, 1) for i in range(30)]  # one trial a minute, back to back
    assert recent_rate(trials) == pytest.approx(60.0)
    assert eta_seconds(20, recent_rate(trials)) == pytest.approx(20 * 60)


def test_a_pause_without_workers_does_not_drag_the_rate():
    from psy_agents.hpo.results import eta_seconds, recent_rate, resumed_at

    # 10 trials in the first 10 minutes, no worker for 5 hours, then 5 trials (two
    # workers, 2 minutes each: 1 trial a minute again), one still running, one failed
    before = [_trial(i, 1) for i in range(10)]
    restart = 10 + 5 * 60
    after = [_trial(restart + 2 * (i // 2), 2, "PRUNED" if i % 2 else "COMPLETE")
             for i in range(5)]
    trials = [*before, *after, _trial(restart + 6, 2, "RUNNING"), _trial(5, 300, "FAIL")]
    assert resumed_at([(t.datetime_start, t.datetime_complete) for t in before + after]) \
        == T0 + timedelta(minutes=restart)
    rate = recent_rate(trials)
    assert rate == pytest.approx(5 / (6 / 60))  # 5 trials in the 6 minutes since restart
    assert _whole_history_rate(trials) < 3.0  # the old estimate: 15 trials over 5 h 16 min
    assert eta_seconds(10, rate) == pytest.approx(12 * 60)


def test_a_slow_trial_or_a_short_gap_is_not_a_pause():
    from psy_agents.hpo.results import resumed_at

    def spans(trials):
        return [(t.datetime_start, t.datetime_complete) for t in trials]

    # worker B idles for 110 minutes while worker A runs one long trial: work went on
    long = [_trial(0, 120), *(_trial(i, 1) for i in range(10)),
            *(_trial(120 + i, 1) for i in range(5))]
    assert resumed_at(spans(long)) == T0
    # 5-second trials 30 s apart: more than 3 median trials, less than PAUSE_MIN_S
    short = [_trial(i * 35 / 60, 5 / 60) for i in range(20)]
    assert resumed_at(spans(short)) == T0
    # ...but the same trials 2 minutes apart are paused every time
    sparse = [_trial(i * 2.1, 5 / 60) for i in range(20)]
    assert resumed_at(spans(sparse)) == T0 + timedelta(minutes=19 * 2.1)


def test_recent_rate_follows_the_last_window_of_trials():
    from psy_agents.hpo.results import RECENT_TRIALS, recent_rate

    # 20 trials at 1/min, then 10 at one per 2 min (a slower region of the space)
    trials = [_trial(i, 1) for i in range(20)] + [_trial(20 + 2 * i, 2) for i in range(10)]
    assert RECENT_TRIALS == 10
    assert recent_rate(trials) == pytest.approx(30.0)


def test_no_rate_before_the_first_finished_trial():
    from psy_agents.hpo.results import eta_seconds, recent_rate

    assert recent_rate([]) is None
    assert recent_rate([_trial(0, 1, "RUNNING"), _trial(0, 1, "FAIL")]) is None
    assert eta_seconds(5, None) is None and eta_seconds(0, None) == 0.0


def _row(agent: str, stage: str, finished: int, budget: int, running: int = 0,
         best: float | None = None, eta_s: float | None = None):
    from psy_agents.hpo.results import StudyStatus

    counts = {"COMPLETE": finished, "PRUNED": 0, "RUNNING": running, "FAIL": 0, "WAITING": 0}
    return StudyStatus(f"x.{agent}.{stage}", budget, counts, best, None, eta_s, running,
                       agent=agent, stage=stage)


def test_progress_line_shows_the_running_studies():
    from psy_agents.hpo.results import progress_line

    rows = [_row("criteria", "s0", 4, 4), _row("criteria", "s1", 12, 60, 2, 0.81234, 250)]
    assert progress_line(rows) == "s1 12/60 run=2 best=0.8123 eta 4m10s"
    rows.append(_row("evidence", "s1", 0, 60, 1))
    assert progress_line(rows) == ("criteria.s1 12/60 run=2 best=0.8123 eta 4m10s | "
                                   "evidence.s1 0/60 run=1 best=- eta ?")
    # nothing running: the next study with budget left, per agent
    idle = [_row("criteria", "s0", 4, 4), _row("criteria", "s1", 0, 60)]
    assert progress_line(idle) == "s1 0/60 run=0 best=- eta ?"
    assert progress_line([_row("criteria", "s0", 4, 4)]) == "done: 1 study, 4 trials finished"
    assert progress_line([]) == "no studies yet"
