"""Usage: launch data {validate,split,stats,synth} [--data-dir DIR] ...

Check, split, describe or synthesize ReDSM5 data. ``--data-dir`` defaults to
``$PSY_DATA_DIR``, else ``./data/sample``. Every bad input ends in one ``error:`` line
(exit code 2) and writes nothing. ``validate`` and ``stats`` only read; ``split`` writes
the splits file; ``synth`` writes a new folder (an existing one only with ``--force``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from psy_agents.cli.options import shared_options
from psy_agents.errors import DataError
from psy_agents.settings import Settings

_DATA_DIR = shared_options("data_dir")
_SPECIAL = click.option("--include-special-case", is_flag=True,
                        help="Keep SPECIAL_CASE rows as a tenth label.")
_STRICT = click.option("--strict", is_flag=True, help="Turn every data warning into an error.")
_SEED = click.option("--seed", type=int, default=13, show_default=True, help="Split seed.")
_RATIOS = click.option("--ratios", default="0.7,0.15,0.15", show_default=True,
                       help="train,val,test fractions; must sum to 1.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _ratios(text: str) -> tuple[float, float, float]:
    from psy_agents.data.splits import check_ratios

    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise DataError(f"--ratios {text}: not a comma-separated list of numbers",
                        "pass e.g. --ratios 0.7,0.15,0.15") from None
    return check_ratios(values)


@click.group()
def data() -> None:
    """Validate, split, describe or synthesize ReDSM5 data."""


@data.command()
@_DATA_DIR
@_SPECIAL
@_STRICT
@_JSON
def validate(settings: Settings, include_special_case: bool, strict: bool,
             as_json: bool) -> None:
    """Check the two CSV files and report every quirk found (reads only)."""
    from psy_agents.data.validate import load_dataset

    dataset = load_dataset(settings.data_dir, include_special_case=include_special_case,
                           strict=strict)
    if as_json:
        click.echo(json.dumps(dataset.report.to_dict(), indent=1))
    else:
        click.echo("\n".join(dataset.report.lines()))


@data.command()
@_DATA_DIR
@_SEED
@_RATIOS
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Splits file [default: <data-dir>/splits-<seed>.json].")
@click.option("--force", is_flag=True, help="Rewrite a splits file made with other settings.")
@_STRICT
def split(settings: Settings, seed: int, ratios: str, out: Path | None, force: bool,
          strict: bool) -> None:
    """Split posts into train/val/test, stratified on symptom profiles; write it once."""
    from psy_agents.data.criteria import SYMPTOMS
    from psy_agents.data.prepare import default_splits_path, profiles_of
    from psy_agents.data.splits import SPLITS, ensure_splits
    from psy_agents.data.validate import load_dataset

    fractions = _ratios(ratios)
    dataset = load_dataset(settings.data_dir, strict=strict)
    path = out or default_splits_path(dataset.data_dir, seed, dataset.data_hash)
    body = ensure_splits(path, profiles_of(dataset), SYMPTOMS, data_hash=dataset.data_hash,
                         seed=seed, ratios=fractions, force=force,
                         rewrite_hint="pass --force to rewrite it")
    sizes = ", ".join(f"{name} {len(body[name])}" for name in SPLITS)
    click.echo(f"splits: {path} (hash {body['hash']}; {sizes} posts)")


@data.command()
@_DATA_DIR
@_SEED
@_RATIOS
@click.option("--splits", "splits_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="An existing splits file [default: <data-dir>/splits-<seed>"
                                 ".json if it exists, else the split is made in memory].")
@_SPECIAL
@_JSON
def stats(settings: Settings, seed: int, ratios: str, splits_path: Path | None,
          include_special_case: bool, as_json: bool) -> None:
    """Per-symptom present/absent pairs and evidence spans in each split (reads only)."""
    from psy_agents.data.prepare import prepare_data, split_command
    from psy_agents.data.stats import split_stats, stats_lines

    fractions = _ratios(ratios)
    save = f"`{split_command(settings.data_dir, seed, fractions)}"
    if splits_path is not None and not splits_path.exists():
        raise DataError(f"{splits_path}: no such splits file",
                        f"write it with {save} --out {splits_path}` or omit --splits")
    prepared = prepare_data(settings.data_dir, splits_path=splits_path, seed=seed,
                            ratios=fractions, include_special_case=include_special_case,
                            write=False)
    if prepared.splits_file is None:
        click.echo(f"note: no splits file yet; this split was made in memory and not saved "
                   f"— save it with {save}`", err=True)
    if as_json:
        click.echo(json.dumps({"data_hash": prepared.data_hash,
                               "split_hash": prepared.split_hash,
                               "splits_file": prepared.splits_file and str(prepared.splits_file),
                               "splits": split_stats(prepared)}, indent=1))
    else:
        click.echo("\n".join(stats_lines(prepared)))


@data.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False),
              default=Path("data") / "sample", show_default=True, help="Output folder.")
@click.option("--n-posts", type=click.IntRange(min=20), default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True,
              help="Replace an existing folder whole (splits files in it included).")
def synth(out: Path, n_posts: int, seed: int, force: bool) -> None:
    """Write synthetic ReDSM5 files with every known quirk planted (see manifest.json)."""
    from psy_agents.data.synth import replace_with_synthetic

    if not force and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: the folder exists and is not empty",
                        "pass --force to replace all of it, or another --out")
    manifest = replace_with_synthetic(out, n_posts=n_posts, seed=seed)
    planted = ", ".join(f"{k} {v}" for k, v in manifest.quirks.items())
    click.echo(f"wrote {out}: {manifest.n_posts} posts, {manifest.n_annotations} annotation "
               f"rows; planted {planted}")
