"""Usage: launch best --study NAME [--storage URL]

Prints the best complete trial of a study as JSON (value, params, fixed training settings).
"""

from __future__ import annotations

import json

import click

from psy_agents.cli.options import shared_options
from psy_agents.settings import Settings


@click.command("best")
@click.option("--study", required=True, help="Study name {experiment}.{agent}.{stage}.")
@shared_options("storage")
def best(study: str, settings: Settings) -> None:
    """Print the best trial of a study."""
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.results import best_record

    record = best_record(open_storage(settings.storage), study)
    click.echo(json.dumps(record, indent=2, default=str))
