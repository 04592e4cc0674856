"""Usage: launch cancel --experiment NAME [--runs-dir DIR]

Stops every worker that the `launch hpo` runs of the experiment started, each launch on
whichever backend it used (the launches recorded in <runs-dir>/<experiment>/backend.json).
Prints one line per launch. Idempotent.
"""

from __future__ import annotations

import click

from psy_agents.cli.options import shared_options
from psy_agents.settings import Settings


@click.command("cancel")
@shared_options("experiment", "runs_dir",
                experiment={"required": True, "default": None, "show_default": False})
def cancel(settings: Settings) -> None:
    """Cancel the workers of an experiment (local, Slurm array or k8s Job), every launch."""
    from psy_agents.backends.registry import cancel_experiment
    from psy_agents.cli.backend_options import profile_dir

    for handle in cancel_experiment(settings.experiment_dir, profile_dir()):
        which = f", launch {handle.launch}" if handle.launch > 1 else ""
        click.echo(f"cancelled the {handle.backend} workers of {settings.experiment} "
                   f"(job {handle.job_id}{which})")
