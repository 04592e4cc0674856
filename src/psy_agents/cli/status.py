"""Usage: launch status [--experiment NAME] [--watch SECONDS] [--storage URL] [--runs-dir DIR]

One line per study, in plan order (by agent, then s0, s1, s2, refit): a budget bar,
complete/pruned/running/failed/waiting counts, best value, trials per hour and the ETA
(both from the recent rate: see ``hpo.results.recent_rate``), live workers, and why a
stage stopped before its budget (``stopped: plateau: 20 trials without a gain of 0.001 over
0.7340``: ``stop_after_trials_without_gain`` in the stages file); under a
study whose budget or workers changed since it was created, its budget history
(``  budget: 6 (2 workers, 11-29 22:50) -> 10 (+3 workers, 11-29 23:05)``, local time).
Never prints a password. With ``--experiment``, when an earlier `launch hpo` recorded its
workers (``<runs-dir>/<experiment>/backend.json``), one more line shows what the backend
says about them (Slurm array tasks, the k8s Job's indexes, local processes), grouped by
state: ``workers: slurm job 12 — running 0-1; pending 2``. ``--watch`` redraws all of it in
place on a terminal, ending with the live progress line `launch hpo` shows; off a terminal
it writes it again only when something changed.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from psy_agents.cli.options import shared_option, shared_options
from psy_agents.errors import ConfigError
from psy_agents.hpo.results import StudyStatus, experiment_list
from psy_agents.hpo.storage_url import mask_url
from psy_agents.settings import Settings


@click.command("status")
@shared_option("experiment", default=None, show_default=False,
               help="Only studies of this experiment, and a line about its workers; an "
                    "experiment the storage does not hold is an error (exit 2) that lists "
                    "those it holds [env: PSY_EXPERIMENT].")
@click.option("--watch", type=click.FloatRange(min=0.5), default=None, metavar="SECONDS",
              help="Refresh every SECONDS until Ctrl-C.")
@shared_options("storage", "runs_dir")
def status(experiment: str | None, watch: float | None, settings: Settings) -> None:
    """Show the progress of every study (and, with --experiment, its backend's workers)."""
    from psy_agents.cli.progress import LiveLines
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.results import all_status, progress_line, status_lines

    st = open_storage(settings.storage)
    out = LiveLines(click.get_text_stream("stdout"))
    while True:
        rows = all_status(st, experiment)
        if not rows and experiment is not None:
            refuse_unknown_experiment(experiment, all_status(st), settings.storage)
        lines = status_lines(rows) or ["no studies yet — start one with `launch hpo`"]
        if experiment is not None:
            line = workers_line(settings.runs_dir / experiment)
            if line:
                lines.extend(line.splitlines())
        if watch is None:
            click.echo("\n".join(lines))
            return
        out.show([*lines, progress_line(rows)] if rows else lines)
        time.sleep(watch)


def refuse_unknown_experiment(experiment: str, rows: list[StudyStatus], url: str) -> None:
    """Refuse ``experiment`` when the storage holds studies (``rows``), none of it; an
    empty storage passes (`launch status` then says there are no studies yet).

    Raises:
        ConfigError: naming the storage (masked) and up to
            :data:`psy_agents.hpo.results.SHOWN_EXPERIMENTS` of
            its experiments, with their count.
    """
    names = sorted({row.name.split(".", 1)[0] for row in rows})  # no "." in an experiment
    if not names:
        return
    raise ConfigError(f"storage {mask_url(url)} holds no experiment {experiment!r}; its "
                      f"{experiment_list(names)}",
                      "pass one of them with --experiment, or the storage that holds it "
                      "with --storage")


def _ranges(indexes: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the inverse of base.parse_index_ranges)."""
    parts: list[str] = []
    for i in sorted(indexes):
        if parts and i == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{i}"
        else:
            parts.append(str(i))
    return ",".join(parts)


def workers_line(run_dir: Path) -> str | None:
    """One line per launch recorded under ``run_dir`` (oldest first, joined by newlines)
    about its workers; None when none were recorded.

    A backend that cannot be asked right now (sacct down, API server unreachable) gives
    a line saying so instead of ending the status: the study lines above are still true,
    and so are the other launches' lines.
    """
    from psy_agents.backends.base import HANDLE_FILE, STATES
    from psy_agents.backends.registry import launch_states
    from psy_agents.cli.backend_options import profile_dir
    from psy_agents.errors import BackendError

    if not (run_dir / HANDLE_FILE).is_file():
        return None
    try:
        launches = launch_states(run_dir, profile_dir())
    except BackendError as exc:
        return f"workers: unknown — {exc.format_message()}"
    lines = []
    for handle, states in launches:
        if isinstance(states, BackendError):
            lines.append(f"workers: unknown — {states.format_message()}")
            continue
        notes = [f"launch {handle.launch}"] if handle.launch > 1 else []
        per_gpu = int(handle.data.get("workers_per_gpu", 1))
        notes += [f"{per_gpu} workers per GPU"] if per_gpu > 1 else []
        about = f" ({', '.join(notes)})" if notes else ""
        if not handle.submitted:
            lines.append(f"workers: {handle.backend}{about} — not submitted (yet)")
            continue
        by_state: dict[str, list[int]] = {}
        for w in states:
            by_state.setdefault(w.state, []).append(w.index)
        shown = "; ".join(f"{s} {_ranges(by_state[s])}" for s in STATES if s in by_state)
        lines.append(f"workers: {handle.backend} job {handle.job_id}{about} — "
                     f"{shown or 'none'}")
    return "\n".join(lines)
