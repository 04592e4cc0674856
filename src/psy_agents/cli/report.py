"""Usage: launch report --study NAME [--storage URL] [--out FILE.html]

Writes one self-contained HTML file (plotly.js inlined, no network needed to view it) with
the study's optimization history, hyperparameter importances, parallel coordinates and
intermediate values, under a table of trial counts and the best trial.
"""

from __future__ import annotations

from pathlib import Path

import click

HELP = """Write a self-contained HTML report (plots + summary) of one study.

\b
Storage: --storage, else env PSY_STORAGE, else sqlite:///runs/optuna.db.
The file embeds plotly.js, so it opens offline; the storage password is masked.
"""


@click.command("report", help=HELP)
@click.option("--study", required=True,
              help="Study name, {experiment}.{agent}.{stage} (see `launch status`).")
@click.option("--storage", default=None,
              help="Optuna storage URL [env: PSY_STORAGE; default sqlite:///runs/optuna.db].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write [default: runs/reports/STUDY.html].")
def report(study: str, storage: str | None, out: Path | None) -> None:
    from psy_agents.hpo.storage import mask_url, open_storage, resolve_url
    from psy_agents.reporting import write_report

    url = resolve_url(storage)
    out = out or Path("runs") / "reports" / f"{study}.html"
    summary = write_report(open_storage(url), study, out, storage_label=mask_url(url))
    total = sum(summary.states.values())
    click.echo(f"wrote {out} (study {study}, {total} trials; storage {mask_url(url)})")
