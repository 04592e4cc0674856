"""Usage: launch cancel --experiment NAME [--runs-dir DIR]

Stops every worker that the `launch hpo` runs of the experiment started, each launch on
whichever backend it used (the launches recorded in <runs-dir>/<experiment>/backend.json).
Prints one line per launch saying what was done: "cancelled N local worker(s) of E
(launch n)", "cancelled the slurm workers of E (job J)", "nothing to cancel: ... have
exited", or "not cancelled: ..." with the reason and what to do by hand. A local process is
signalled only while it is provably the one the launch started (same pid and start time).
Idempotent: exit 0 whether or not anything was still running.
"""

from __future__ import annotations

import click

from psy_agents.backends.base import Cancelled, Handle
from psy_agents.cli.options import shared_options
from psy_agents.settings import Settings


@click.command("cancel")
@shared_options("experiment", "runs_dir",
                experiment={"required": True, "default": None, "show_default": False})
def cancel(settings: Settings) -> None:
    """Cancel the workers of an experiment (local, Slurm array or k8s Job), every launch."""
    from psy_agents.backends.registry import cancel_experiment
    from psy_agents.cli.backend_options import profile_dir

    for handle, done in cancel_experiment(settings.experiment_dir, profile_dir()):
        click.echo(cancel_line(settings.experiment, handle, done))


def cancel_line(experiment: str, handle: Handle, done: Cancelled) -> str:
    """The one line ``launch cancel`` prints for a launch. A backend that counts the
    processes it stopped (local) names the launch by number, as its job id is a pid that
    means nothing once the launcher is gone; one that cancels by job id names the job."""
    if done.stopped is not None:
        where = f"launch {handle.launch}"
    else:
        where = f"job {handle.job_id}" + (f", launch {handle.launch}" if handle.launch > 1
                                         else "")
    workers = f"the {handle.backend} workers of {experiment} ({where})"
    if done.refused:
        return f"not cancelled: {workers}: {done.refused}"
    if done.ended:
        return f"nothing to cancel: {workers} have exited"
    if done.stopped is not None:
        return f"cancelled {done.stopped} {handle.backend} worker(s) of {experiment} ({where})"
    return f"cancelled {workers}"
