"""Usage: launch cancel --experiment NAME [--runs-dir DIR]

Stops every worker an earlier `launch hpo` started for the experiment, on whichever backend
it used (the handle recorded in runs/<experiment>/backend.json). Idempotent.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("cancel")
@click.option("--experiment", required=True, envvar="PSY_EXPERIMENT",
              help="Experiment whose workers to stop [env: PSY_EXPERIMENT].")
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs",
              show_default=True, envvar="PSY_RUNS_DIR", help="Runs root [env: PSY_RUNS_DIR].")
def cancel(experiment: str, runs_dir: str) -> None:
    """Cancel the workers of an experiment (local, Slurm array or k8s Job)."""
    from psy_agents.backends.registry import cancel_experiment

    handle = cancel_experiment(Path(runs_dir) / experiment)
    click.echo(f"cancelled the {handle.backend} workers of {experiment} (job {handle.job_id})")
