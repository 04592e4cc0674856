"""Usage: launch bench calibration [--agent criteria] [--seeds 3] [--epochs E] [--fix K=V ...]

Trains one model per seed on the data folder (tiny model by default), then lets every
decision rule (fixed 0.5, one global threshold, per-symptom thresholds shrunk toward it)
choose its thresholds on val and scores each on test: per seed, then the mean ± std over
seeds and each rule's paired difference to fixed. The README's calibration table comes
from this command.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from psy_agents.cli.options import BENCH_RUNS, shared_options
from psy_agents.settings import Settings


@click.command("calibration")
@click.option("--agent", type=click.Choice(["criteria", "share", "joint"]), default="criteria",
              show_default=True, help="An agent with symptom decisions.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Models trained, seeds 0..N-1.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Epochs per model [default: TrainConfig's].")
@click.option("--fix", "fixed", multiple=True, metavar="KEY=VALUE",
              help="A training setting, as `launch hpo --fix` (e.g. cls_loss=weighted).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every seed's figures as JSON here.")
@shared_options("data_dir", "runs_dir", "cache_dir", **BENCH_RUNS)
def bench_calibration(agent: str, seeds: int, epochs: int | None, fixed: tuple[str, ...],
                      out: Path | None, settings: Settings) -> None:
    """Test macro-F1 of each decision rule, thresholds chosen on val, over seeds."""
    import dataclasses

    from psy_agents.bench.calibration import run_seeds, summary_lines
    from psy_agents.cli.hpo_checks import parse_fixed
    from psy_agents.cli.train import build_config, load_data

    cfg = build_config(agent, parse_fixed(fixed), "--fix", epochs=epochs)
    data = load_data(settings.data_dir, None)
    click.echo(f"agent {agent}, backbone {cfg.backbone}, {cfg.epochs} epochs, seeds "
               f"0..{seeds - 1}, data {settings.data_dir}; thresholds chosen on val, "
               "scored on test")

    def show(r) -> None:
        click.echo(f"seed {r.seed} (best epoch {r.best_epoch}): " + ", ".join(
            f"{m} {v:.4f}" for m, v in r.test_f1.items()))

    results = run_seeds(cfg, data, range(seeds), cache_dir=settings.cache, on_seed=show)
    for line in summary_lines(results):
        click.echo(line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"kind": "bench calibration", "agent": agent,
                                   "config": cfg.to_dict(),
                                   "seeds": [dataclasses.asdict(r) for r in results]},
                                  indent=2))
        click.echo(f"wrote {out}")
