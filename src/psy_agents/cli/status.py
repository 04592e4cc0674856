"""Usage: launch status [--experiment NAME] [--watch SECONDS] [--storage URL] [--runs-dir DIR]

One line per study: a budget bar, complete/pruned/running/failed/waiting counts, best value,
trials per hour, ETA and live workers. Never prints a password. With ``--experiment``, when
an earlier `launch hpo` recorded its workers (``<runs-dir>/<experiment>/backend.json``), one
more line shows what the backend says about them (Slurm array tasks, the k8s Job's indexes,
local processes), grouped by state: ``workers: slurm job 12 — running 0-1; pending 2``.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

storage_option = click.option(
    "--storage", default=None,
    help="Optuna storage URL [env: PSY_STORAGE; default sqlite:///runs/optuna.db].")


def open_read_storage(flag: str | None):
    """The storage for a read-only command (errors are one masked line)."""
    from psy_agents.hpo.storage import open_storage, resolve_url

    return open_storage(resolve_url(flag))


@click.command("status")
@click.option("--experiment", default=None, help="Only studies of this experiment.")
@click.option("--watch", type=click.FloatRange(min=0.5), default=None, metavar="SECONDS",
              help="Refresh every SECONDS until Ctrl-C.")
@storage_option
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True, envvar="PSY_RUNS_DIR",
              help="Runs root holding <experiment>/backend.json [env: PSY_RUNS_DIR].")
def status(experiment: str | None, watch: float | None, storage: str | None,
           runs_dir: Path) -> None:
    """Show the progress of every study (and, with --experiment, its backend's workers)."""
    from psy_agents.hpo.results import all_status, format_status

    st = open_read_storage(storage)
    while True:
        rows = all_status(st, experiment)
        if watch is not None:
            click.clear()
        if not rows:
            click.echo("no studies yet — start one with `launch hpo`")
        for row in rows:
            click.echo(format_status(row))
        if experiment is not None:
            line = workers_line(runs_dir / experiment)
            if line:
                click.echo(line)
        if watch is None:
            return
        time.sleep(watch)


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
    """One line about the workers recorded under ``run_dir``; None when none were recorded.

    A backend that cannot be asked right now (sacct down, API server unreachable) gives
    a line saying so instead of ending the status: the study lines above are still true.
    """
    from psy_agents.backends.base import HANDLE_FILE, STATES
    from psy_agents.backends.registry import worker_states
    from psy_agents.errors import BackendError

    if not (run_dir / HANDLE_FILE).is_file():
        return None
    try:
        handle, states = worker_states(run_dir)
    except BackendError as exc:
        return f"workers: unknown — {exc.format_message()}"
    by_state: dict[str, list[int]] = {}
    for w in states:
        by_state.setdefault(w.state, []).append(w.index)
    shown = "; ".join(f"{s} {_ranges(by_state[s])}" for s in STATES if s in by_state)
    return f"workers: {handle.backend} job {handle.job_id} — {shown or 'none'}"
