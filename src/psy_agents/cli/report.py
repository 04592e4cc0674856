"""Usage: launch report --study NAME [--storage URL] [--out FILE.html]

Writes one self-contained HTML file (plotly.js inlined, no network needed to view it) with
the study's optimization history, hyperparameter importances, parallel coordinates and
intermediate values, under a table of trial counts and the best trial.
"""

from __future__ import annotations

from pathlib import Path

import click

from psy_agents.cli.options import shared_options
from psy_agents.settings import Settings

HELP = """Write a self-contained HTML report (plots + summary) of one study.

\b
The file embeds plotly.js, so it opens offline; the storage password is masked.
"""


@click.command("report", help=HELP)
@click.option("--study", required=True,
              help="Study name, {experiment}.{agent}.{stage} (see `launch status`).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write [default: <runs-dir>/reports/STUDY.html].")
@shared_options("storage", "runs_dir")
def report(study: str, out: Path | None, settings: Settings) -> None:
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.storage_url import mask_url
    from psy_agents.reporting import write_report

    url = settings.storage
    out = out or settings.runs_dir / "reports" / f"{study}.html"
    summary = write_report(open_storage(url), study, out, storage_label=mask_url(url))
    total = sum(summary.states.values())
    click.echo(f"wrote {out} (study {study}, {total} trials; storage {mask_url(url)})")
