"""Usage: launch bench pruning [--stage s1] [--trials T] [--epochs E] [--seeds 3]
[--objective train] [--pruner P] [--min-resource R] [--reduction-factor F] [--out F]

The same stage twice — with its pruner (ASHA for s1) and without — with the same seeds, on
the sample data with the tiny model (or the simulated objective), once per seed; prints each
seed's epochs, best values and wall times, the epochs ratio and the regret, then each
figure's mean ± standard deviation over the seeds. The pruner options override the stage's
settings in both arms (the unpruned arm keeps the cap, patience and epoch sampling).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.cli.options import BENCH_RUNS, shared_options
from psy_agents.settings import Settings


def _stage_changes(trials, epochs, patience, pruner, min_resource, reduction_factor,
                   bootstrap_count, sample_epochs) -> dict:
    """The stage fields the options override (None: the stage's own value)."""
    changes = {k: v for k, v in (("trials", trials), ("epochs", epochs), ("pruner", pruner),
                                 ("min_resource", min_resource),
                                 ("reduction_factor", reduction_factor),
                                 ("bootstrap_count", bootstrap_count),
                                 ("sample_epochs", sample_epochs), ("patience", patience))
               if v is not None}
    if trials is not None:
        changes["trials_per_agent"] = {}
    return changes


def _echo_seed(run) -> None:
    for arm in (run.pruned, run.unpruned):
        click.echo(f"seed {run.seed}  {arm.pruner:9s} {arm.trials:4d} trials {arm.epochs:6d} "
                   f"epochs  best {arm.best_value:.4f}  {arm.wall_s:7.1f} s")
    click.echo(f"seed {run.seed}  epochs ratio {run.figures['epochs_ratio']:.3f}, regret "
               f"{100 * run.figures['regret']:+.2f}%")


def _echo_summary(summary: dict, n: int) -> None:
    def row(name: str, scale: float = 1.0, fmt: str = ".3f", unit: str = "") -> str:
        s = summary[name]
        return f"{scale * s['mean']:{fmt}}{unit} ± {scale * s['std']:{fmt.lstrip('+')}}{unit}"
    click.echo(f"mean ± std over {n} seed(s):")
    click.echo(f"  epochs ratio  {row('epochs_ratio')}  (goal <= 0.30)")
    click.echo(f"  regret        {row('regret', 100, '+.2f', '%')}  (goal <= 1%)")
    click.echo(f"  wall pruned   {row('pruned_wall_s', 1, '.1f', ' s')}")
    click.echo(f"  wall unpruned {row('unpruned_wall_s', 1, '.1f', ' s')}")


@click.command("pruning")
@click.option("--agent", default="criteria", show_default=True,
              help=f"The agent whose study is run: one of {', '.join(AGENT_NAMES)}.")
@click.option("--fix", "fixed", multiple=True, metavar="KEY=VALUE",
              help="Hold a training setting in both arms, as `launch hpo --fix`.")
@click.option("--stage", default="s1", show_default=True, help="Stage from the stages file.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Override the stage's trial budget (both arms).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override the stage's epoch cap (both arms; patience is capped to it).")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Override the stage's early-stopping patience (both arms).")
@click.option("--pruner", type=click.Choice(["asha", "hyperband"]), default=None,
              help="Override the stage's pruner (default: the stage's; asha if it has none).")
@click.option("--min-resource", type=click.IntRange(min=1), default=None,
              help="Override the stage's first rung (epochs).")
@click.option("--reduction-factor", type=click.IntRange(min=2), default=None,
              help="Override the stage's rung ratio.")
@click.option("--bootstrap-count", type=click.IntRange(min=0), default=None,
              help="Override the stage's trials needed at a rung before pruning there.")
@click.option("--sample-epochs/--no-sample-epochs", default=None,
              help="Override whether `epochs` is sampled (both arms).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--objective", type=click.Choice(["train", "simulated"]), default="train",
              show_default=True)
@click.option("--backbone", default="tiny", show_default=True)
@click.option("--epoch-s", type=click.FloatRange(min=0.001), default=0.05, show_default=True,
              help="Mean epoch seconds of the simulated objective.")
@click.option("--seed", type=int, default=0, show_default=True, help="The first seed.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Seeds seed, seed+1, ...: both arms run once per seed.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here.")
@shared_options("storage", "data_dir", "runs_dir", "stages_file", **BENCH_RUNS)
def bench_pruning(agent: str, fixed: tuple[str, ...], stage: str, workers: int,
                  objective: str, backbone: str, epoch_s: float, seed: int, seeds: int,
                  out: Path | None, settings: Settings, **overrides) -> None:
    """Epochs saved by pruning and the best value it gives up (regret), over seeds."""
    from psy_agents.agents.registry import get_agent
    from psy_agents.bench.pruning import PruningSpec, meets_goal, run_seeds, summarize
    from psy_agents.bench.storage import new_experiment
    from psy_agents.cli.hpo_checks import parse_fixed
    from psy_agents.hpo.stages import load_stages
    from psy_agents.hpo.storage_url import mask_url

    get_agent(agent)  # an unknown name is one ConfigError line listing the agents
    train = parse_fixed(fixed)
    (cfg,) = load_stages([stage], settings.stages_file)
    changes = _stage_changes(**overrides)
    if overrides["epochs"] is not None and overrides["patience"] is None:
        changes["patience"] = min(cfg.patience, overrides["epochs"])
    cfg = dataclasses.replace(cfg, **changes)
    url = settings.storage
    spec = PruningSpec(storage_url=url, stage=cfg, agent=agent, train=train, n_workers=workers,
                       objective=objective, backbone=backbone,
                       data_dir=settings.data_dir.resolve(), seed=seed, epoch_s=epoch_s,
                       runs_dir=settings.runs_dir)
    click.echo(f"{agent} stage {cfg.name}: {cfg.budget(agent)} trials x {cfg.epochs} epochs "
               f"(patience {cfg.patience}, sampled epochs {cfg.sample_epochs}), pruner "
               f"{cfg.pruner} min_resource {cfg.min_resource} reduction_factor "
               f"{cfg.reduction_factor} bootstrap {cfg.bootstrap_count}; objective {objective}, "
               f"backbone {backbone}, {workers} worker(s), {seeds} seed(s), "
               f"storage {mask_url(url)}")
    runs = run_seeds(spec, new_experiment("bench-prune"), range(seed, seed + seeds), _echo_seed)
    summary = summarize(runs)
    _echo_summary(summary, len(runs))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"kind": "bench pruning", "agent": agent, "fixed": train,
                   "stage": cfg.to_dict(), "objective": objective, "backbone": backbone,
                   "workers": workers, "seeds": [r.seed for r in runs],
                   "runs": [dataclasses.asdict(r) for r in runs], "summary": summary,
                   "meets_goal": meets_goal(summary)}
        out.write_text(json.dumps(payload, indent=2))
        click.echo(f"wrote {out}")
