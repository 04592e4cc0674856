"""Usage: launch export --study NAME --out DIR [--top-k K] [--storage URL]

Writes best.json, top_k.json/.csv and trials.json/.csv, read from the database only.
"""

from __future__ import annotations

from pathlib import Path

import click

from psy_agents.cli.options import shared_options
from psy_agents.settings import Settings


@click.command("export")
@click.option("--study", required=True, help="Study name {experiment}.{agent}.{stage}.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (created).")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True)
@shared_options("storage")
def export(study: str, out: Path, top_k: int, settings: Settings) -> None:
    """Export a study's best config, top-k and all trials."""
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.results import export_study

    for path in export_study(open_storage(settings.storage), study, out, top_k):
        click.echo(str(path))
