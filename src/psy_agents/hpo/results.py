"""Read-only views of the studies for ``launch status``, ``launch best`` and ``launch export``.

Everything here reads the database only (never a worker's files), so parallel workers can
never overwrite each other's results: the database is the one source of truth. The rate and
ETA math are pure functions of trial timestamps (:func:`recent_rate`), tested alone.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.errors import ConfigError, StorageError
from psy_agents.hpo.spec import (
    BUDGET_HISTORY_ATTR,
    REFIT_SUMMARY_ATTR,
    SPEC_ATTR,
    STOPPED_ATTR,
    StudySpec,
    load_spec,
)

RECENT_TRIALS = 10  # finished trials the rate is measured over
PAUSE_FACTOR = 3.0  # an idle gap this many median trial durations long is a pause...
PAUSE_MIN_S = 60.0  # ...and never shorter than this (a worker's own gap between trials)
_FINISHED = ("COMPLETE", "PRUNED")
SHOWN_EXPERIMENTS = 5  # an unknown experiment's error lists this many of the stored ones


@dataclass(frozen=True)
class BudgetEntry:
    """One ``launch hpo`` that created or extended a study: the budget it set, when (UTC),
    and how many workers it started."""

    budget: int
    at: datetime
    workers: int


@dataclass(frozen=True)
class StudyStatus:
    name: str
    budget: int
    counts: dict[str, int]  # COMPLETE, PRUNED, RUNNING, FAIL, WAITING
    best_value: float | None
    trials_per_hour: float | None  # the recent rate (see recent_rate)
    eta_s: float | None
    live_workers: int
    agent: str = ""
    stage: str = ""
    position: int = 0  # index of the study in its agent's stage chain
    budget_history: tuple[BudgetEntry, ...] = ()
    stopped: str = ""  # why the stage stopped before its budget (a plateau), else ""
    refit: str = ""  # a finished refit's result line (spec.REFIT_SUMMARY_ATTR), else ""

    @property
    def finished(self) -> int:
        return self.counts["COMPLETE"] + self.counts["PRUNED"]

    @property
    def ended(self) -> bool:
        """The budget is finished (or the stage stopped early) and no trial is RUNNING or
        WAITING (for a retry)."""
        return ((self.finished >= self.budget or bool(self.stopped))
                and self.counts["RUNNING"] == 0 and self.counts["WAITING"] == 0)


def _finished_spans(trials) -> list[tuple[datetime, datetime]]:
    """(start, complete) of the COMPLETE and PRUNED trials, in completion order."""
    spans = [(t.datetime_start, t.datetime_complete) for t in trials
             if t.state.name in _FINISHED and t.datetime_start and t.datetime_complete]
    return sorted(spans, key=lambda s: s[1])


def resumed_at(spans: Sequence[tuple[datetime, datetime]], *, factor: float = PAUSE_FACTOR,
               min_gap_s: float = PAUSE_MIN_S) -> datetime | None:
    """When the current stretch of work began: the first start after the last pause.

    A pause is a stretch during which no finished trial was running, longer than ``factor``
    times the median trial duration and than ``min_gap_s``. Heavy-tailed trials do not
    fake one (a long trial covers the time it ran), nor does a worker's short gap between
    two trials. Returns None when ``spans`` is empty. Pure.
    """
    if not spans:
        return None
    median_s = statistics.median((end - start).total_seconds() for start, end in spans)
    gap_s = max(factor * median_s, min_gap_s)
    ordered = sorted(spans)
    since, covered_to = ordered[0][0], ordered[0][1]
    for start, end in ordered[1:]:
        if (start - covered_to).total_seconds() > gap_s:
            since = start
        covered_to = max(covered_to, end)
    return since


def recent_rate(trials, window: int = RECENT_TRIALS) -> float | None:
    """Finished trials per hour, measured over the recent past only.

    The rate counts the last ``window`` finished trials since the last pause (see
    :func:`resumed_at`), over the time from the completion just before them (or from the
    first start after the pause, when fewer have finished since) to the last completion.
    Why not the whole history: hours without workers, or a campaign that gained workers,
    would drag the rate, and so the ETA, for the rest of the campaign. Why a window of
    trials rather than of hours: it adapts to both seconds-long and hour-long trials.

    Args:
        trials: objects with ``state.name``, ``datetime_start`` and ``datetime_complete``
            (Optuna FrozenTrials); only COMPLETE and PRUNED ones count.

    Returns:
        Trials per hour, or None before the first trial finished. Pure.
    """
    spans = _finished_spans(trials)
    since = resumed_at(spans)
    if since is None:
        return None
    recent = [s for s in spans if s[0] >= since]
    counted, before = recent[-window:], recent[:-window]
    begin = before[-1][1] if before else since
    hours = (counted[-1][1] - begin).total_seconds() / 3600
    return len(counted) / hours if hours > 0 else None


def eta_seconds(left: int, rate: float | None) -> float | None:
    """Seconds to finish ``left`` trials at ``rate`` trials/h: 0 when none is left, None
    when the rate is unknown. Pure."""
    if left <= 0:
        return 0.0
    return left / rate * 3600 if rate else None


def _utc(at: datetime) -> datetime:
    """``at`` with its zone; a time written without one is UTC (what `launch hpo` writes)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def budget_history(raw: Any, study: str) -> tuple[BudgetEntry, ...]:
    """The ``psy_budget_history`` user attr (a list, or its JSON text) as entries; () when
    the attr is absent.

    Raises:
        StorageError: the attr is not a list of {"budget", "at", "workers"} objects.
    """
    if raw is None:
        return ()
    try:
        items = json.loads(raw) if isinstance(raw, str) else raw
        return tuple(BudgetEntry(int(e["budget"]), _utc(datetime.fromisoformat(e["at"])),
                                 int(e["workers"])) for e in items)
    except (TypeError, KeyError, ValueError) as exc:
        raise StorageError(f"study {study}: user attr {BUDGET_HISTORY_ATTR} is malformed "
                           f"({type(exc).__name__}: {exc})",
                           "it is written by `launch hpo`; remove the attr or fix its JSON"
                           ) from None


def study_status(summary, storage) -> StudyStatus | None:
    """Status of one study (an ``optuna.study.StudySummary``); None if it has no psy spec.

    Raises:
        StorageError: a malformed budget history (see :func:`budget_history`).
    """
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
    rate = recent_rate(trials)
    values = [t.value for t in trials if t.value is not None]
    # Heartbeats keep RUNNING trials honest: a dead worker's trial is failed by the next
    # worker that looks, so the workers of RUNNING trials are the live ones.
    live = {(t.user_attrs.get("worker_index"), t.user_attrs.get("pid"))
            for t in trials if t.state.name == "RUNNING"}
    stopped = str(summary.user_attrs.get(STOPPED_ATTR, ""))
    left = 0 if stopped else spec.budget - counts["COMPLETE"] - counts["PRUNED"]
    chain = list(spec.chain)
    return StudyStatus(
        summary.study_name, spec.budget, counts, max(values) if values else None, rate,
        eta_seconds(left, rate), len(live), agent=spec.agent, stage=spec.stage["name"],
        position=chain.index(spec.name) if spec.name in chain else len(chain),
        budget_history=budget_history(summary.user_attrs.get(BUDGET_HISTORY_ATTR),
                                      summary.study_name), stopped=stopped,
        refit=str(summary.user_attrs.get(REFIT_SUMMARY_ATTR, "")))


def plan_order(row: StudyStatus) -> tuple:
    """Sort key: experiment, then agent as ``--agent all`` lists them, then the stage's
    place in its chain (s0, s1, s2, refit), whatever the names sort to."""
    agent = AGENT_NAMES.index(row.agent) if row.agent in AGENT_NAMES else len(AGENT_NAMES)
    return row.name.rsplit(".", 2)[0], agent, row.agent, row.position, row.name


def all_status(storage, experiment: str | None = None) -> list[StudyStatus]:
    """Every psy study of ``storage`` (of ``experiment`` only, when given), in plan order."""
    import optuna

    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if experiment and not summary.study_name.startswith(f"{experiment}."):
            continue
        row = study_status(summary, storage)
        if row is not None:
            rows.append(row)
    return sorted(rows, key=plan_order)


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
            f"eta={_duration(row.eta_s)}  workers={row.live_workers}"
            + (f"  stopped: {row.stopped}" if row.stopped else ""))


def format_budget_history(history: Sequence[BudgetEntry], tz: tzinfo | None = None) -> str | None:
    """``  budget: 6 (2 workers, 11-29 22:50) -> 10 (+3 workers, 11-29 23:05)``: one line
    when the budget or the workers changed after creation (more than one entry), else None.
    Times are shown in ``tz`` (None: this machine's local time)."""
    if len(history) < 2:
        return None
    parts = []
    for i, e in enumerate(history):
        when = e.at.astimezone(tz).strftime("%m-%d %H:%M")
        workers = f"{'+' if i else ''}{e.workers} worker{'s' if e.workers != 1 else ''}"
        parts.append(f"{e.budget} ({workers}, {when})")
    return "  budget: " + " -> ".join(parts)


def status_lines(rows: Sequence[StudyStatus]) -> list[str]:
    """What ``launch status`` prints: a line per study, each followed by its budget
    history line when it has one, and a finished refit by its result line."""
    lines = []
    for row in rows:
        lines.append(format_status(row))
        history = format_budget_history(row.budget_history)
        if history:
            lines.append(history)
        if row.refit:
            lines.append(f"  {row.refit}")
    return lines


def _progress_part(row: StudyStatus, label: str) -> str:
    best = "-" if row.best_value is None else f"{row.best_value:.4f}"
    return (f"{label} {row.finished}/{row.budget} run={row.counts['RUNNING']} best={best} "
            f"eta {_duration(row.eta_s)}")


def progress_line(rows: Sequence[StudyStatus]) -> str:
    """One compact line for live progress, e.g. ``s1 12/60 run=2 best=0.8123 eta 4m10s``.

    It shows the studies with trials running or waiting for a retry (else, per agent, the
    next study with budget left), joined by `` | ``; the agent is named only when there
    are several. Depends on the rows alone, so it changes only when the database does.
    """
    if not rows:
        return "no studies yet"
    several = len({r.agent for r in rows}) > 1
    active = [r for r in rows if r.counts["RUNNING"] or r.counts["WAITING"]]
    if not active:
        nexts: dict[str, StudyStatus] = {}
        for r in rows:
            if r.finished < r.budget and not r.stopped:
                nexts.setdefault(r.agent, r)
        active = list(nexts.values())
    if not active:
        n = len(rows)
        return (f"done: {n} stud{'ies' if n > 1 else 'y'}, "
                f"{sum(r.finished for r in rows)} trials finished")
    return " | ".join(_progress_part(r, f"{r.agent}.{r.stage}" if several else r.stage)
                      for r in active)


def trial_record(t) -> dict[str, Any]:
    """One trial as plain JSON types (the storage URL is never part of a trial)."""
    def iso(d: datetime | None) -> str | None:
        return d.isoformat() if d else None

    return {"number": t.number, "state": t.state.name, "value": t.value,
            "params": dict(t.params), "epochs_reported": len(t.intermediate_values),
            "start": iso(t.datetime_start), "complete": iso(t.datetime_complete),
            "user_attrs": dict(t.user_attrs)}


def experiment_list(names: Sequence[str]) -> str:
    """``"3 experiment(s): a, b, c"`` (at most :data:`SHOWN_EXPERIMENTS` named, then ``and
    N more``), or ``"no experiment"`` for none: what an error about an unknown experiment
    lists."""
    if not names:
        return "no experiment"
    listed = ", ".join(names[:SHOWN_EXPERIMENTS])
    if len(names) > SHOWN_EXPERIMENTS:
        listed += f" and {len(names) - SHOWN_EXPERIMENTS} more"
    return f"{len(names)} experiment(s): {listed}"


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
