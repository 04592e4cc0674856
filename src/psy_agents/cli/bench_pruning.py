"""Usage: launch bench pruning [--stage s1] [--trials T] [--epochs E] [--objective train] [--out F]

The same stage twice — with its pruner (ASHA for s1) and without — with the same seeds, on
the sample data with the tiny model (or the simulated objective); prints the epochs each
search computed, each best value, the epochs ratio and the regret.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.cli.options import BENCH_RUNS, shared_options
from psy_agents.settings import Settings


@click.command("pruning")
@click.option("--agent", default="criteria", show_default=True,
              help=f"The agent whose study is run: one of {', '.join(AGENT_NAMES)}.")
@click.option("--fix", "fixed", multiple=True, metavar="KEY=VALUE",
              help="Hold a training setting in both arms, as `launch hpo --fix`.")
@click.option("--stage", default="s1", show_default=True, help="Stage from the stages file.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Override the stage's trial budget (both arms).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override the stage's epoch cap (both arms).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--objective", type=click.Choice(["train", "simulated"]), default="train",
              show_default=True)
@click.option("--backbone", default="tiny", show_default=True)
@click.option("--epoch-s", type=click.FloatRange(min=0.001), default=0.05, show_default=True,
              help="Mean epoch seconds of the simulated objective.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here.")
@shared_options("storage", "data_dir", "runs_dir", "stages_file", **BENCH_RUNS)
def bench_pruning(agent: str, fixed: tuple[str, ...], stage: str, trials: int | None,
                  epochs: int | None, workers: int, objective: str, backbone: str,
                  epoch_s: float, seed: int, out: Path | None, settings: Settings) -> None:
    """Epochs saved by pruning and the best value it gives up (regret)."""
    from psy_agents.agents.registry import get_agent
    from psy_agents.bench.pruning import PruningSpec, compare, run_arms
    from psy_agents.bench.storage import new_experiment
    from psy_agents.cli.hpo_checks import parse_fixed
    from psy_agents.hpo.stages import load_stages
    from psy_agents.hpo.storage_url import mask_url

    get_agent(agent)  # an unknown name is one ConfigError line listing the agents
    train = parse_fixed(fixed)
    (cfg,) = load_stages([stage], settings.stages_file)
    changes = {k: v for k, v in (("trials", trials), ("epochs", epochs)) if v is not None}
    if epochs is not None:
        changes["patience"] = min(cfg.patience, epochs)
    if trials is not None:
        changes["trials_per_agent"] = {}
    cfg = dataclasses.replace(cfg, **changes)
    url = settings.storage
    spec = PruningSpec(storage_url=url, stage=cfg, agent=agent, train=train, n_workers=workers,
                       objective=objective, backbone=backbone,
                       data_dir=settings.data_dir.resolve(), seed=seed, epoch_s=epoch_s,
                       runs_dir=settings.runs_dir)
    click.echo(f"{agent} stage {cfg.name}: {cfg.budget(agent)} trials x {cfg.epochs} epochs, "
               f"objective {objective}, backbone {backbone}, {workers} worker(s), "
               f"storage {mask_url(url)}")
    pruned, unpruned = run_arms(spec, new_experiment("bench-prune"))
    figures = compare(pruned, unpruned)
    for arm in (pruned, unpruned):
        click.echo(f"{arm.pruner:9s} {arm.trials:4d} trials {arm.epochs:5d} epochs  "
                   f"best {arm.best_value:.4f}")
    click.echo(f"epochs ratio {figures['epochs_ratio']:.3f} (goal <= 0.30), regret "
               f"{100 * figures['regret']:.2f}% (goal <= 1%)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"kind": "bench pruning", "agent": agent, "fixed": train, "stage": cfg.to_dict(), "objective": objective,
                   "backbone": backbone, "workers": workers, "seed": seed,
                   "pruned": dataclasses.asdict(pruned), "unpruned": dataclasses.asdict(unpruned),
                   **figures}
        out.write_text(json.dumps(payload, indent=2))
        click.echo(f"wrote {out}")
