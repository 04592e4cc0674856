"""Usage: launch plan --agent all --stage max --workers N [--epoch-seconds A=S,...] [--from-bench F] [--backbone B]

Projects a campaign's wall time from measured figures: seconds per epoch (from `launch bench
train --out`, or --epoch-seconds), the pruning epochs ratio (`launch bench pruning --out`)
and the scheduling efficiency (`launch bench storage --out`). Figures not given are shown as
ASSUMED. Prints one row per agent and the total: one GPU without pruning, the workers, and
the workers with pruning (only when the ratio was measured or given); then the speed-up of
the workers and that of pruning on separate lines, each with its source, and the headline
speed-up, which never counts an assumed pruning ratio; then the peak disk, estimated from
the backbone's parameter count (resume checkpoints of the running trials + the models each
study keeps; see :mod:`psy_agents.bench.plan`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.cli.options import shared_options
from psy_agents.settings import Settings

ASSUMED_RATIO = 0.30  # the project's pruning goal, used only when nothing was measured
ASSUMED_EFFICIENCY = 0.95


def _figure(flag: float | None, found: dict, key: str, assumed: float):
    from psy_agents.bench.plan import Figure

    if flag is not None:
        return Figure(flag, f"given by --{key.replace('_', '-')}")
    return found.get(key) or Figure(assumed, "ASSUMED (not measured)", assumed=True)


def _epoch_figures(epoch_seconds: str | None, found: dict, agents) -> dict:
    from psy_agents.bench.plan import Figure, missing_agents, parse_epoch_seconds
    from psy_agents.errors import ConfigError

    figures = dict(found["epoch_s"])
    if epoch_seconds:
        figures.update({a: Figure(s, "flag") for a, s in parse_epoch_seconds(epoch_seconds).items()})
    missing = missing_agents(agents, figures)
    if missing:
        raise ConfigError(f"no seconds-per-epoch figure for {', '.join(missing)}",
                          "measure it with `launch bench train --agent A --out F` and pass "
                          "--from-bench F, or give --epoch-seconds A=SECONDS")
    return figures


@click.command("plan")
@click.option("--agent", required=True, type=click.Choice([*AGENT_NAMES, "all"]))
@click.option("--stage", default="max", show_default=True, help="Stage from the stages file.")
@click.option("--workers", type=click.IntRange(min=1), required=True)
@click.option("--epoch-seconds", default=None, metavar="AGENT=S,...",
              help="Seconds per epoch (train + eval) per agent, e.g. criteria=12.5.")
@click.option("--from-bench", "bench_files", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="JSON from `launch bench train|storage|pruning --out`; repeatable.")
@click.option("--pruning-ratio", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Epochs with pruning / without (overrides --from-bench).")
@click.option("--efficiency", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Scheduling efficiency of the pool (overrides --from-bench).")
@click.option("--backbone", "backbones", multiple=True, default=("minilm",), show_default=True,
              help="Backbone(s) of the campaign (tiny, minilm or a local model folder), for "
                   "the disk estimate; repeatable, the largest counts.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@shared_options("stages_file")
def plan(agent: str, stage: str, workers: int, epoch_seconds: str | None,
         bench_files: tuple[Path, ...], pruning_ratio: float | None,
         efficiency: float | None, backbones: tuple[str, ...], out: Path | None,
         settings: Settings) -> None:
    """Project a campaign's wall time and peak disk from measured figures."""
    from psy_agents.bench.plan import project, read_bench_files, speed_up
    from psy_agents.hpo.stages import load_stages

    agents = AGENT_NAMES if agent == "all" else (agent,)
    (cfg,) = load_stages([stage], settings.stages_file)
    found = read_bench_files(bench_files)
    counted = _count_params(backbones)  # a backbone it cannot count fails before any output
    epoch_s = _epoch_figures(epoch_seconds, found, agents)
    ratio = _figure(pruning_ratio, found, "pruning_ratio", ASSUMED_RATIO)
    eff = _figure(efficiency, found, "efficiency", ASSUMED_EFFICIENCY)
    rows = [project(a, trials=cfg.budget(a), epochs=cfg.epochs, epoch_s=epoch_s[a].value,
                    workers=workers, pruning_ratio=ratio.value, efficiency=eff.value)
            for a in agents]
    ups = speed_up(rows, ratio)
    click.echo(f"stage {cfg.name}, {workers} workers")
    _table(rows, ups, workers, epoch_s)
    _factors(ups, workers, ratio, eff)
    disk = _disk(cfg, agents, workers, counted, sum(r.trials for r in rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "kind": "plan", "stage": cfg.name, "workers": workers,
            "pruning_ratio": asdict(ratio), "efficiency": asdict(eff),
            "agents": [asdict(r) | {"epoch_s_source": epoch_s[r.agent].source} for r in rows],
            "total_single_gpu_s": ups.single_gpu_s, "total_workers_s": ups.workers_s,
            "total_pruned_s": ups.pruned_s, "total_campaign_s": ups.campaign_s,
            "speed_up": {"workers": ups.workers, "pruning": ups.pruning,
                         "pruning_counted": ups.pruning_counted, "headline": ups.headline},
            "disk": disk}, indent=2))
        click.echo(f"wrote {out}")


def _table(rows, ups, workers: int, epoch_s: dict) -> None:
    """One row per agent and the total; the pruned column only when the pruning counts."""
    from psy_agents.bench.plan import fmt_duration

    cols = [("1 GPU, no pruning", 18, "single_gpu_s"), (f"{workers} workers", 11, "workers_s")]
    if ups.pruning_counted:
        cols.append(("+ pruning", 10, "pruned_s"))
    click.echo(f"{'agent':9s} {'trials':>6s} {'epochs':>6s} {'s/epoch':>8s} "
               + " ".join(f"{h:>{w}s}" for h, w, _ in cols) + "  s/epoch source")
    for r in rows:
        click.echo(f"{r.agent:9s} {r.trials:6d} {r.epochs:6d} {r.epoch_s:8.2f} "
                   + " ".join(f"{fmt_duration(getattr(r, k)):>{w}s}" for _, w, k in cols)
                   + f"  {epoch_s[r.agent].source}")
    click.echo(f"{'total':9s} {sum(r.trials for r in rows):6d} {'':6s} {'':8s} "
               + " ".join(f"{fmt_duration(getattr(ups, k)):>{w}s}" for _, w, k in cols))


def _factors(ups, workers: int, ratio, eff) -> None:
    """The workers' and the pruning's speed-ups apart, each with its source, then the
    headline, which leaves an assumed pruning ratio out."""
    click.echo(f"workers: {ups.workers:.1f}x ({workers} workers at efficiency "
               f"{eff.value:.3f}) [{eff.source}]")
    if ups.pruning_counted:
        click.echo(f"pruning: {ups.pruning:.2f}x (epochs ratio {ratio.value:.3f}) "
                   f"[{ratio.source}]")
        click.echo(f"speed-up {ups.headline:.1f}x over 1 GPU = workers {ups.workers:.1f}x "
                   f"x pruning {ups.pruning:.2f}x (pruning {ratio.source.split(':')[0]})")
        return
    click.echo(f"pruning: {ups.pruning:.2f}x if its epochs ratio were {ratio.value:.3f} "
               f"[{ratio.source}: the project's goal] - left out of the speed-up")
    click.echo(f"speed-up {ups.headline:.1f}x over 1 GPU = workers only (measure the pruning "
               "with `launch bench pruning --out F` and pass --from-bench F)")


def _count_params(backbones: tuple[str, ...]) -> dict:
    from psy_agents.bench.plan import count_params

    return {b: count_params(b) for b in backbones}


def _disk(cfg, agents, workers: int, counted: dict, trials: int) -> dict:
    """Print the peak-disk estimate; return it for --out."""
    from psy_agents.bench.plan import (
        CHECKPOINT_BYTES_PER_PARAM,
        MODEL_BYTES_PER_PARAM,
        agent_params,
        fmt_bytes,
        project_disk,
    )

    largest = max(counted, key=lambda b: counted[b].value)
    params = {a: agent_params(a, counted[largest].value) for a in agents}
    kept = cfg.seeds if cfg.is_refit else cfg.keep_models
    disk = project_disk(params, workers=workers, trials=trials, models_per_study=kept)
    click.echo(f"peak disk {fmt_bytes(disk.peak_bytes)} (ESTIMATE: {CHECKPOINT_BYTES_PER_PARAM} "
               f"bytes/param per checkpoint = fp32 weights + 2 AdamW moments, "
               f"{MODEL_BYTES_PER_PARAM} bytes/param per model; heads not counted)")
    click.echo(f"  backbone {largest}: {counted[largest].value / 1e6:.1f} M params "
               f"[{counted[largest].source}]")
    click.echo(f"  running trials: {disk.running_trials} x {fmt_bytes(disk.trial_bytes)} "
               f"(checkpoint, twice while rewritten, + staged best model) = "
               f"{fmt_bytes(disk.running_trials * disk.trial_bytes)}")
    click.echo(f"  kept models: {kept} per study x {len(agents)} "
               f"{'study' if len(agents) == 1 else 'studies'} = "
               f"{fmt_bytes(disk.kept_bytes)}" + (" (joint: two encoders)"
                                                  if "joint" in agents else ""))
    return asdict(disk) | {"backbone": largest, "params": counted[largest].value,
                           "params_source": counted[largest].source, "estimate": True}
