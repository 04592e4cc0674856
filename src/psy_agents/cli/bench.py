"""Usage: launch bench train --agent A [--backbone B] [--max-length N] [--workers-per-gpu K]

Benchmarks that print measured figures. ``bench train`` times one training epoch and one
evaluation pass with dynamic padding + length bucketing, then the same with every window
padded to ``max_length``, in the same process, and prints the ratio. With
``--workers-per-gpu K`` it measures instead the trials/s of 1, 2, 4, ... up to K training
processes sharing the device, the same trials for each K, and the ratio to K=1
(:mod:`psy_agents.bench.gpu_share`).
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.cli.options import shared_options
from psy_agents.cli.train import LIMIT, build_config, load_data
from psy_agents.settings import Settings


@click.group("bench")
def bench() -> None:
    """Benchmarks that print measured figures."""


def _time_epoch(run, pad_to: int | None) -> tuple[float, int]:
    from psy_agents.training.loop import train_epoch

    t0 = time.perf_counter()
    _, seen = train_epoch(run, 0, pad_to=pad_to)
    return time.perf_counter() - t0, seen


def _time_eval(run, pad_to: int | None, repeats: int = 2) -> float:
    """Seconds for one pass over the eval windows, the best of ``repeats``: the first pass
    after training pays one-off costs (allocator, kernel selection) that would otherwise
    count against whichever padding mode is timed first."""
    from psy_agents.training.evaluate import predict_windows

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_windows(run.model, run.eval_ws, heads=run.spec.heads, batch_size=32,
                        pad_id=run.pad_id, device=run.device, bf16=run.cfg.bf16,
                        max_answer=run.cfg.max_answer_tokens, pad_to=pad_to)
        best = min(best, time.perf_counter() - t0)
    return best


@bench.command("train")
@click.option("--agent", required=True, help=f"One of {', '.join(AGENT_NAMES)}.")
@click.option("--backbone", default="tiny", show_default=True)
@click.option("--max-length", type=int, default=None, help="Window length in tokens.")
@click.option("--batch-size", type=int, default=None)
@shared_options("data_dir", "runs_dir", "cache_dir")
@LIMIT
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here (input of `launch plan --from-bench`).")
@click.option("--workers-per-gpu", type=click.IntRange(min=1), default=None, metavar="K",
              help="Measure trials/s with 1, 2, 4, ... up to K training processes sharing "
                   "the device at once (each with 1/K of the GPU's memory; on a CPU they "
                   "share the cores), the same --trials for every K, and print each K's "
                   "ratio to K=1. Replaces the padding comparison.")
@click.option("--trials", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --workers-per-gpu: training runs of one epoch per measurement.")
def bench_train(agent: str, backbone: str, max_length: int | None, batch_size: int | None,
                settings: Settings, limit_posts: int | None, out: Path | None,
                workers_per_gpu: int | None, trials: int) -> None:
    """Samples/s and seconds/epoch, dynamic vs pad-to-max batching (or, with
    --workers-per-gpu, trials/s with K processes per device)."""
    from psy_agents.training.config import TrainConfig
    from psy_agents.training.run import prepare

    # A shorter window gets a proportionate overlap (the default stride fits 256 tokens).
    stride = None if max_length is None else min(TrainConfig.stride, max(0, max_length // 4))
    cfg = build_config(agent, {}, "flags", backbone=backbone, max_length=max_length,
                       stride=stride, batch_size=batch_size, epochs=1)
    if workers_per_gpu is not None:
        _bench_share(cfg, load_data(settings.data_dir, limit_posts), settings.cache,
                     workers_per_gpu, trials, out, posts=limit_posts)
        return
    run = prepare(cfg, load_data(settings.data_dir, limit_posts), cache_dir=settings.cache)
    click.echo(f"agent {agent}, backbone {backbone}, device {run.device}, "
               f"max_length {cfg.max_length}, "
               f"eval windows {len(run.eval_ws)}")
    rows = {}
    for name, pad_to in (("dynamic", None), ("pad-to-max", cfg.max_length)):
        sec, seen = _time_epoch(run, pad_to)
        ev = _time_eval(run, pad_to)
        rows[name] = (sec, seen, ev)
        click.echo(f"{name:11s} train {seen / sec:8.1f} samples/s {sec:7.2f} s/epoch | "
                   f"eval {len(run.eval_ws) / ev:8.1f} samples/s {ev:7.2f} s/epoch")
    (dt, _, de), (pt, _, pe) = rows["dynamic"], rows["pad-to-max"]
    click.echo(f"pad-to-max / dynamic time: train {pt / dt:.2f}x, eval {pe / de:.2f}x")
    if out is not None:
        _write_train_json(out, agent=agent, backbone=backbone, device=str(run.device),
                          max_length=cfg.max_length, rows=rows, posts=limit_posts)


def _write_train_json(out: Path, *, agent: str, backbone: str, device: str, max_length: int,
                      rows: dict, posts: int | None) -> None:
    import json

    # epoch_s (dynamic padding, train + eval) is what one HPO epoch costs on this data.
    payload = {"kind": "bench train", "agent": agent, "backbone": backbone, "device": device,
               "max_length": max_length, "limit_posts": posts,
               "epoch_s": rows["dynamic"][0] + rows["dynamic"][2],
               **{name.replace("-", "_"): {"train_s": sec, "train_samples": seen, "eval_s": ev}
                  for name, (sec, seen, ev) in rows.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    click.echo(f"wrote {out}")


def _bench_share(cfg, data, cache: Path, k: int, trials: int, out: Path | None, *,
                 posts: int | None) -> None:
    import json

    from psy_agents.bench.gpu_share import ks_up_to, run_sweep

    click.echo(f"agent {cfg.agent}, backbone {cfg.backbone}, max_length {cfg.max_length}: "
               f"{trials} trials of 1 epoch for each K; time from the common start (after "
               "each process loaded the data and ran one warm-up trial) to the last one done")
    sweep = run_sweep(cfg, data, ks=ks_up_to(k), trials=trials, cache_dir=cache)
    for line in sweep.lines():
        click.echo(line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"kind": "bench train workers-per-gpu", "agent": cfg.agent,
                                   "backbone": cfg.backbone, "max_length": cfg.max_length,
                                   "limit_posts": posts, "trials": trials,
                                   **sweep.to_json()}, indent=2))
        click.echo(f"wrote {out}")


def _register() -> None:
    # Each benchmark lives in its own module; the group imports them only to list them
    # (they import nothing heavy at module level).
    from psy_agents.cli.bench_pruning import bench_pruning
    from psy_agents.cli.bench_storage import bench_storage

    bench.add_command(bench_storage)
    bench.add_command(bench_pruning)


_register()
