"""Usage: launch baseline [--data-dir DIR] [--split val|test] [--out FILE.json]

Trains the TF-IDF + logistic regression baseline on the train split of the agents' own
post-level split (the splits file if there is one, else the same split made in memory),
chooses its decision thresholds and no-answer cut on val, and prints per-symptom F1 with a
95 % bootstrap interval over posts, AUROC, symptom macro-F1, and the evidence baseline's
span F1 / EM / no-answer accuracy. Reads only; ``--out`` writes the figures as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from psy_agents.cli.options import shared_options
from psy_agents.errors import ConfigError
from psy_agents.settings import Settings

HELP = """Score the TF-IDF + logistic regression baseline on the val or test split.

\b
Trained on the agents' train split; thresholds and the evidence cut are chosen on val.
Prints the criteria agent's metrics (per-symptom F1 with a 95 % bootstrap interval over
posts, AUROC, symptom macro-F1) and the evidence agent's (span F1, EM, no-answer accuracy).
Writes nothing unless --out is given.
"""


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def table_lines(result: Any) -> list[str]:
    """The printed table of a :class:`~psy_agents.training.baseline.BaselineResult`."""
    crit, ev = result.criteria, result.evidence
    rows = [f"{'symptom':20s} {'F1':>6s}  {'95% interval':18s} {'AUROC':>6s}  threshold"]
    for name, threshold in crit.thresholds.items():
        interval = crit.intervals.get(f"f1/{name}")
        rows.append(f"{name:20s} {_fmt(crit.metrics.get(f'f1/{name}')):>6s}  "
                    f"{str(interval or '-'):18s} {_fmt(crit.metrics.get(f'auroc/{name}')):>6s}"
                    f"  {threshold:.3f}")
    rows.append(f"{'symptom_macro_f1':20s} {crit.metrics['symptom_macro_f1']:>6.4f}  "
                f"{str(crit.intervals['symptom_macro_f1']):18s} "
                f"{crit.metrics['macro_auroc']:>6.4f}  (macro AUROC)")
    rows.append(f"evidence: best TF-IDF sentence, no answer below similarity {ev.cut:.3f}")
    rows += [f"{key:20s} {value:>6.4f}" for key, value in ev.metrics.items()]
    return rows


def _write(out: Path, payload: dict[str, Any]) -> None:
    from psy_agents.data.load import write_text_atomic

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(payload, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write the baseline figures to {out}: "
                          f"{exc.strerror or exc}", "pass a writable file path to --out") from None


@click.command("baseline", help=HELP)
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="The split to score (the test split only for final figures).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures to this JSON file.")
@shared_options("data_dir")
def baseline(split: str, out: Path | None, settings: Settings) -> None:
    from psy_agents.data.prepare import prepare_data
    from psy_agents.training.baseline import run_baseline
    from psy_agents.training.intervals import LEVEL, N_BOOT

    data = prepare_data(settings.data_dir, write=False)
    result = run_baseline(data, split, n_boot=N_BOOT, seed=0)
    if out is not None:  # before printing, so a bad --out shows only its error line
        _write(out, {"data_dir": str(settings.data_dir), "data_hash": data.data_hash,
                     "split_hash": data.split_hash,
                     "bootstrap": {"n_boot": N_BOOT, "seed": 0, "level": LEVEL},
                     **result.to_dict()})
    click.echo(f"baseline TF-IDF + logistic regression on the {split} split of "
               f"{settings.data_dir}: {result.posts} posts, {result.pairs} pairs (trained on "
               f"{result.train_posts} train posts; thresholds and cut chosen on val)")
    for line in table_lines(result):
        click.echo(line)
    if out is not None:
        click.echo(f"wrote {out}")
