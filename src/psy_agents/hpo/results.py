"""Read-only views of the studies for ``launch status``, ``launch best`` and ``launch export``.

Everything here reads the database only (never a worker's files), so parallel workers can
never overwrite each other's results: the database is the one source of truth.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from psy_agents.errors import ConfigError
from psy_agents.hpo.spec import SPEC_ATTR, StudySpec, load_spec


@dataclass(frozen=True)
class StudyStatus:
    name: str
    budget: int
    counts: dict[str, int]  # COMPLETE, PRUNED, RUNNING, FAIL, WAITING
    best_value: float | None
    trials_per_hour: float | None
    eta_s: float | None
    live_workers: int

    @property
    def finished(self) -> int:
        return self.counts["COMPLETE"] + self.counts["PRUNED"]


def _rate(trials, finished: int) -> float | None:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    if finished == 0 or not starts or not ends:
        return None
    hours = (max(ends) - min(starts)).total_seconds() / 3600
    return finished / hours if hours > 0 else None


def study_status(summary, storage) -> StudyStatus | None:
    """Status of one study (an ``optuna.study.StudySummary``); None if it has no psy spec."""
    import optuna

    raw = summary.user_attrs.get(SPEC_ATTR)
    if raw is None:
        return None
    spec = StudySpec.from_json(raw)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts = {s: 0 for s in ("COMPLETE", "PRUNED", "RUNNING", "FAIL", "WAITING")}
    for t in trials:
        counts[t.state.name] += 1
    finished = counts["COMPLETE"] + counts["PRUNED"]
    rate = _rate(trials, finished)
    left = max(0, spec.budget - finished)
    values = [t.value for t in trials if t.value is not None]
    # Heartbeats keep RUNNING trials honest: a dead worker's trial is failed by the next
    # worker that looks, so the workers of RUNNING trials are the live ones.
    live = {(t.user_attrs.get("worker_index"), t.user_attrs.get("pid"))
            for t in trials if t.state.name == "RUNNING"}
    return StudyStatus(summary.study_name, spec.budget, counts, max(values) if values else None,
                       rate, left / rate * 3600 if rate and left else (0.0 if not left else None),
                       len(live))


def all_status(storage, experiment: str | None = None) -> list[StudyStatus]:
    import optuna

    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if experiment and not summary.study_name.startswith(f"{experiment}."):
            continue
        row = study_status(summary, storage)
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda r: r.name)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"


def format_status(row: StudyStatus, width: int = 20) -> str:
    done = min(width, round(width * row.finished / row.budget)) if row.budget else width
    bar = "#" * done + "." * (width - done)
    c = row.counts
    best = "-" if row.best_value is None else f"{row.best_value:.4f}"
    rate = "-" if row.trials_per_hour is None else f"{row.trials_per_hour:.1f}"
    return (f"{row.name}  [{bar}] {row.finished}/{row.budget}  complete={c['COMPLETE']} "
            f"pruned={c['PRUNED']} running={c['RUNNING']} failed={c['FAIL']} "
            f"waiting={c['WAITING']}  best={best}  trials/h={rate}  "
            f"eta={_duration(row.eta_s)}  workers={row.live_workers}")


def trial_record(t) -> dict[str, Any]:
    """One trial as plain JSON types (the storage URL is never part of a trial)."""
    def iso(d: datetime | None) -> str | None:
        return d.isoformat() if d else None

    return {"number": t.number, "state": t.state.name, "value": t.value,
            "params": dict(t.params), "epochs_reported": len(t.intermediate_values),
            "start": iso(t.datetime_start), "complete": iso(t.datetime_complete),
            "user_attrs": dict(t.user_attrs)}


def load_trials(storage, name: str):
    study, spec = load_spec(storage, name)
    return study, spec, study.get_trials(deepcopy=False)


def best_record(storage, name: str) -> dict[str, Any]:
    """The best COMPLETE trial of ``name``. Raises ConfigError if none has finished."""
    _, spec, trials = load_trials(storage, name)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        raise ConfigError(f"study {name} has no complete trial yet",
                          "wait for workers (see `launch status`)")
    best = max(complete, key=lambda t: (t.value, -t.number))
    return {"study": name, "agent": spec.agent, "stage": spec.stage["name"],
            "train_defaults": spec.train_defaults, **trial_record(best)}


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    keys = sorted({k for r in records for k in r["params"]})
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["number", "state", "value", "epochs_reported", "start", "complete",
                         *keys])
        for r in records:
            writer.writerow([r["number"], r["state"], r["value"], r["epochs_reported"],
                             r["start"], r["complete"], *(r["params"].get(k, "") for k in keys)])


def export_study(storage, name: str, out: Path, top_k: int) -> list[Path]:
    """Write best.json, top_k.{json,csv} and trials.{json,csv} of ``name`` under ``out``."""
    _, _, trials = load_trials(storage, name)
    records = [trial_record(t) for t in sorted(trials, key=lambda t: t.number)]
    ranked = sorted((r for r in records if r["state"] == "COMPLETE"),
                    key=lambda r: (-r["value"], r["number"]))[:top_k]
    out.mkdir(parents=True, exist_ok=True)
    files = {"best.json": best_record(storage, name), "top_k.json": ranked, "trials.json": records}
    for fname, payload in files.items():
        (out / fname).write_text(json.dumps(payload, indent=2, default=str))
    _write_csv(out / "top_k.csv", ranked)
    _write_csv(out / "trials.csv", records)
    return [out / f for f in (*files, "top_k.csv", "trials.csv")]
