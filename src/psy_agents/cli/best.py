"""Usage: launch best --study NAME [--storage URL]

Prints the best complete trial of a study as JSON (value, params, fixed training settings).
"""

from __future__ import annotations

import json

import click

from psy_agents.cli.status import open_read_storage, storage_option


@click.command("best")
@click.option("--study", required=True, help="Study name {experiment}.{agent}.{stage}.")
@storage_option
def best(study: str, storage: str | None) -> None:
    """Print the best trial of a study."""
    from psy_agents.hpo.results import best_record

    click.echo(json.dumps(best_record(open_read_storage(storage), study), indent=2, default=str))
