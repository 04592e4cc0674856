"""Usage: launch export --study NAME --out DIR [--top-k K] [--models DIR] [--runs-dir R] [--storage URL]

Writes best.json, top_k.json/.csv and trials.json/.csv, read from the database only. With
``--models DIR`` it also copies the study's kept best-epoch models (its top ``keep_models``
COMPLETE trials, kept under ``<runs-dir>/<experiment>/models/<study>/``) to
``DIR/trial-<n>/``, with ``DIR/index.json`` (trial, value, params per model).
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
@click.option("--models", "models_out", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Also copy the study's kept models here (read from "
                                 "--runs-dir), one trial-<n>/ folder each, and index.json.")
@shared_options("storage", "runs_dir")
def export(study: str, out: Path, top_k: int, models_out: Path | None,
           settings: Settings) -> None:
    """Export a study's best config, top-k and all trials (and its kept models)."""
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.models import export_models
    from psy_agents.hpo.results import export_study

    storage = open_storage(settings.storage)
    # The models first: a study without kept models fails before anything is written.
    models = [] if models_out is None else export_models(storage, study, settings.runs_dir,
                                                         models_out)
    for path in [*export_study(storage, study, out, top_k), *models]:
        click.echo(str(path))
