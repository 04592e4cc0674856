"""Usage: launch bench train --agent A [--agent B] [--backbone B ...] [--max-length N]
[--peak-tflops F] [--workers-per-gpu K] [--compile]

Benchmarks that print measured figures. ``bench train`` times, for each agent and backbone
given, one training epoch and one evaluation pass with dynamic padding + length bucketing,
then the same with every window padded to ``max_length``, in the same process, and prints
the ratio; then a table per agent and backbone of windows/s, host and device time per
step, host syncs per step and MFU (:mod:`psy_agents.bench.train_steps`). With
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


def _timed_dynamic(run) -> tuple[float, int, object]:
    """The dynamic-padding epoch, its steps timed (``bench.train_steps.StepTimer``)."""
    from psy_agents.bench.train_steps import timed_epoch

    timer, sec = timed_epoch(run)
    return sec, timer.windows, timer


def _time_eval(run, pad_to: int | None, repeats: int = 2) -> float:
    """Seconds for one pass over the eval windows, the best of ``repeats``: the first pass
    after training pays one-off costs (allocator, kernel selection) that would otherwise
    count against whichever padding mode is timed first."""
    from psy_agents.training.evaluate import predict_windows

    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_windows(run.model, run.eval_ws, heads=run.spec.heads,
                        batch_size=run.cfg.eval_batch_on(run.device), pad_id=run.pad_id, device=run.device,
                        bf16=run.cfg.bf16, max_answer=run.cfg.max_answer_tokens, pad_to=pad_to,
                        pad_multiple=run.cfg.pad_multiple_on(run.device),
                        max_width=run.cfg.max_length)
        best = min(best, time.perf_counter() - t0)
    return best


@bench.command("train")
@click.option("--agent", "agents", required=True, multiple=True,
              help=f"One of {', '.join(AGENT_NAMES)}; repeat for several.")
@click.option("--backbone", "backbones", multiple=True,
              help="A backbone (default tiny); repeat for several.")
@click.option("--max-length", type=int, default=None, help="Window length in tokens.")
@click.option("--batch-size", type=int, default=None)
@shared_options("data_dir", "runs_dir", "cache_dir")
@LIMIT
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures as JSON here (input of `launch plan --from-bench`); "
                   "one --agent and one --backbone only.")
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The device's peak TFLOPS for MFU (default: the table of common GPUs for "
                   "the precision in use; none for a CPU, where MFU is n/a).")
@click.option("--sync-steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Training steps whose host syncs are counted (after the timed epoch).")
@click.option("--workers-per-gpu", type=click.IntRange(min=1), default=None, metavar="K",
              help="Measure trials/s with 1, 2, 4, ... up to K training processes sharing "
                   "the device at once (each with 1/K of the GPU's memory; on a CPU they "
                   "share the cores), the same --trials for every K, and print each K's "
                   "ratio to K=1. Replaces the padding comparison.")
@click.option("--trials", type=click.IntRange(min=1), default=8, show_default=True,
              help="With --workers-per-gpu: training runs of one epoch per measurement.")
@click.option("--compile", "compile_encoder", is_flag=True,
              help="Compile the encoder(s) with torch.compile, as the stage setting "
                   "`compile = true` does; one untimed warm-up epoch pays the compilation "
                   "(its seconds are printed) before anything is timed.")
def bench_train(agents: tuple[str, ...], backbones: tuple[str, ...], max_length: int | None,
                batch_size: int | None, settings: Settings, limit_posts: int | None,
                out: Path | None, peak_tflops: float | None, sync_steps: int,
                workers_per_gpu: int | None, trials: int, compile_encoder: bool) -> None:
    """Samples/s and seconds/epoch, dynamic vs pad-to-max batching, and per agent and
    backbone: windows/s, host/device ms per step, host syncs per step and MFU (or, with
    --workers-per-gpu, trials/s with K processes per device)."""
    from psy_agents.bench.train_steps import TABLE_HEADER, table_row
    from psy_agents.training.config import TrainConfig

    backbones = backbones or ("tiny",)
    pairs = [(a, b) for a in dict.fromkeys(agents) for b in dict.fromkeys(backbones)]
    if len(pairs) > 1 and (out is not None or workers_per_gpu is not None):
        raise click.UsageError("--out and --workers-per-gpu take one --agent and one "
                               f"--backbone, not {len(pairs)} pairs: run once per pair")
    # A shorter window gets a proportionate overlap (the default stride fits 256 tokens).
    stride = None if max_length is None else min(TrainConfig.stride, max(0, max_length // 4))
    configs = [build_config(a, {}, "flags", backbone=b, max_length=max_length, stride=stride,
                            batch_size=batch_size, epochs=1) for a, b in pairs]
    data = load_data(settings.data_dir, limit_posts)
    if workers_per_gpu is not None:
        if compile_encoder:
            raise click.UsageError("--compile measures one process; leave it out with "
                                   "--workers-per-gpu")
        _bench_share(configs[0], data, settings.cache, workers_per_gpu, trials, out,
                     posts=limit_posts)
        return
    table = []
    for cfg in configs:
        figures = _bench_one(cfg, data, settings.cache, out, posts=limit_posts,
                             sync_steps=sync_steps, peak_tflops=peak_tflops,
                             compile_encoder=compile_encoder)
        table.append(table_row(cfg.agent, cfg.backbone, figures))
    click.echo(TABLE_HEADER)
    for line in table:
        click.echo(line)


def _bench_one(cfg, data, cache: Path, out: Path | None, *, posts: int | None,
               sync_steps: int, peak_tflops: float | None, compile_encoder: bool = False):
    from psy_agents.bench.train_steps import measure
    from psy_agents.training.run import prepare

    run = prepare(cfg, data, cache_dir=cache, compile_encoder=compile_encoder)
    click.echo(f"agent {cfg.agent}, backbone {cfg.backbone}, device {run.device}, "
               f"max_length {cfg.max_length}, "
               f"eval windows {len(run.eval_ws)}" + (", encoder compiled" if compile_encoder
                                                     else ""))
    if compile_encoder:  # every padded width of the epoch compiled before the timing
        warm, _ = _time_epoch(run, None)
        click.echo(f"compile + warm-up epoch: {warm:.2f} s (untimed below)")
    rows, timer = {}, None
    for name, pad_to in (("dynamic", None), ("pad-to-max", cfg.max_length)):
        if pad_to is None:
            sec, seen, timer = _timed_dynamic(run)
        else:
            sec, seen = _time_epoch(run, pad_to)
        ev = _time_eval(run, pad_to)
        rows[name] = (sec, seen, ev)
        click.echo(f"{name:11s} train {seen / sec:8.1f} samples/s {sec:7.2f} s/epoch | "
                   f"eval {len(run.eval_ws) / ev:8.1f} samples/s {ev:7.2f} s/epoch")
    (dt, _, de), (pt, _, pe) = rows["dynamic"], rows["pad-to-max"]
    click.echo(f"pad-to-max / dynamic time: train {pt / dt:.2f}x, eval {pe / de:.2f}x")
    figures = measure(run, timer, rows["dynamic"][0], sync_steps=sync_steps,
                      peak_flag=peak_tflops)
    click.echo(f"steps: {figures.steps} of the dynamic epoch ({figures.device_name}, "
               f"{figures.precision}); "
               f"host syncs {figures.syncs_in_steps} in {figures.sync_steps} counted steps, "
               f"{figures.syncs_after_steps} after them; 6 x {figures.params:,} "
               f"non-embedding params x {figures.tokens:,} tokens / {figures.train_s:.2f} s = "
               f"{figures.tflops:.4f} TFLOPS; peak: {figures.peak_source}")
    if out is not None:
        _write_train_json(out, agent=cfg.agent, backbone=cfg.backbone, device=str(run.device),
                          max_length=cfg.max_length, rows=rows, posts=posts,
                          steps=figures.to_json())
    return figures


def _write_train_json(out: Path, *, agent: str, backbone: str, device: str, max_length: int,
                      rows: dict, posts: int | None, steps: dict) -> None:
    import json

    # epoch_s (dynamic padding, train + eval) is what one HPO epoch costs on this data.
    payload = {"kind": "bench train", "agent": agent, "backbone": backbone, "device": device,
               "max_length": max_length, "limit_posts": posts,
               "epoch_s": rows["dynamic"][0] + rows["dynamic"][2],
               **{name.replace("-", "_"): {"train_s": sec, "train_samples": seen, "eval_s": ev}
                  for name, (sec, seen, ev) in rows.items()},
               "steps": steps}
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
    from psy_agents.cli.bench_calibration import bench_calibration
    from psy_agents.cli.bench_pruning import bench_pruning
    from psy_agents.cli.bench_storage import bench_storage

    bench.add_command(bench_storage)
    bench.add_command(bench_pruning)
    bench.add_command(bench_calibration)


_register()
