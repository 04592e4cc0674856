"""Usage: launch bench storage [--storage URL] --workers N --trials T [--growth 100,1000] [--out F]

N real `launch worker` processes run the simulated objective on one study; prints scheduling
efficiency, per-trial coordination overhead (p50/p95), trials/s and the peak number of DB
connections, then two baselines on the same trial durations (batch barrier, process per
trial) and our throughput as a ratio to each. ``--growth`` repeats a smaller measurement on
studies already holding that many finished trials, so the per-trial cost curve is visible.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from psy_agents.cli.options import BENCH_RUNS, shared_options
from psy_agents.settings import Settings


def _storage_figures(spec, *, cold_samples: int, measure_barrier: bool) -> dict:
    from psy_agents.bench import baselines, stats
    from psy_agents.bench.storage import measure_cold_start, new_experiment, run_pool

    experiment = new_experiment()
    run = run_pool(spec, experiment)
    if not run.timings:
        raise click.ClickException("the pool finished no trial; read the worker logs")
    figures = stats.pool_figures(run.timings)
    durations = [t.work_s for t in sorted(run.timings, key=lambda t: t.start)]
    cold = measure_cold_start(spec, experiment, cold_samples)
    measured = baselines.measure_barrier(durations, spec.n_workers) if measure_barrier else None
    return {"study": run.study, "workers": spec.n_workers, "history": spec.history,
            "states": run.states, "wall_s": run.wall_s, "max_db_connections": run.max_connections,
            "worker_cold_start_s": {"p50": stats.percentile(run.cold_start_s, 50),
                                    "max": max(run.cold_start_s)},
            "cold_start_samples_s": cold, **figures,
            "baselines": baselines.compare(
                durations, spec.n_workers, ours_span_s=figures["span_s"],
                overhead_s=figures["overhead_p50_ms"] / 1000,
                cold_start_s=stats.percentile(cold, 50), measured_barrier_s=measured)}


def _growth_row(spec) -> dict:
    from psy_agents.bench import stats
    from psy_agents.bench.storage import run_pool

    run = run_pool(spec)
    return {"history": spec.history, "workers": spec.n_workers,
            "max_db_connections": run.max_connections, **stats.pool_figures(run.timings)}


def _echo_main(r: dict) -> None:
    b = r["baselines"]
    conns = "n/a (SQLite)" if r["max_db_connections"] is None else r["max_db_connections"]
    click.echo(f"study {r['study']}: {r['workers']} workers, {r['trials']} trials "
               f"({r['history']} finished before), states {r['states']}")
    click.echo(f"scheduling efficiency   {r['efficiency']:.3f}  (objective work / worker time "
               "after each worker's first trial)")
    click.echo(f"overhead per trial      p50 {r['overhead_p50_ms']:.1f} ms, "
               f"p95 {r['overhead_p95_ms']:.1f} ms  (time outside the objective's epochs)")
    click.echo(f"throughput              {r['trials_per_s']:.2f} trials/s over {r['span_s']:.1f} s"
               f" (wall incl. worker start {r['wall_s']:.1f} s)")
    click.echo(f"DB connections (peak)   {conns}")
    measured = b["barrier_measured_s"]
    click.echo(f"batch barrier           {b['barrier_computed_s']:.1f} s computed"
               + (f", {measured:.1f} s measured" if measured is not None else "")
               + f"; efficiency {b['barrier_efficiency']:.3f}; ours is "
               f"{b['ratio_vs_barrier']:.2f}x its throughput ({b['barrier_basis']})")
    click.echo(f"process per trial       {b['process_per_trial_s']:.1f} s with a measured cold "
               f"start of {b['cold_start_s']:.2f} s/trial; ours is "
               f"{b['ratio_vs_process_per_trial']:.2f}x its throughput (computed)")


def _parse_growth(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of whole numbers",
                                 param_hint="--growth") from None
    if any(s < 0 for s in sizes):
        raise click.BadParameter("sizes must be >= 0", param_hint="--growth")
    return sizes


@click.command("storage")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=6, show_default=True,
              help="Epoch cap of the simulated study (ASHA prunes on epochs).")
@click.option("--epoch-s", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Mean simulated epoch seconds (heavy-tailed, slept not spun).")
@click.option("--history", type=click.IntRange(min=0), default=0, show_default=True,
              help="Finished trials added to the study before the workers start.")
@click.option("--growth", default=None, metavar="N1,N2,...",
              help="Also measure overhead with these many finished trials in the study.")
@click.option("--growth-workers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--growth-trials", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--cold-samples", type=click.IntRange(min=1), default=3, show_default=True,
              help="Cold worker starts measured for the process-per-trial baseline.")
@click.option("--measure-barrier/--compute-barrier", default=False, show_default=True,
              help="Also run the barrier baseline for real (threads sleeping the durations).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every figure as JSON here.")
@shared_options("storage", "runs_dir", **BENCH_RUNS)
def bench_storage(workers: int, trials: int, epochs: int, epoch_s: float,
                  history: int, growth: str | None, growth_workers: int, growth_trials: int,
                  cold_samples: int, measure_barrier: bool, seed: int,
                  out: Path | None, settings: Settings) -> None:
    """Scaling and coordination overhead of the real worker loop and storage (Postgres
    also reports database connections)."""
    from dataclasses import replace

    from psy_agents.bench.storage import PoolSpec
    from psy_agents.hpo.storage_url import mask_url

    sizes = _parse_growth(growth)
    url = settings.storage
    spec = PoolSpec(storage_url=url, n_workers=workers, trials=trials, epochs=epochs,
                    epoch_s=epoch_s, history=history, seed=seed, runs_dir=settings.runs_dir)
    click.echo(f"storage {mask_url(url)}; simulated epochs: mean {epoch_s} s (Pareto 2.5), "
               f"cap {epochs}, ASHA")
    result = _storage_figures(spec, cold_samples=cold_samples, measure_barrier=measure_barrier)
    _echo_main(result)
    rows = []
    for size in sizes:
        rows.append(_growth_row(replace(spec, history=size, n_workers=growth_workers,
                                        trials=growth_trials)))
        r = rows[-1]
        click.echo(f"growth: {r['history']:>6} finished before -> overhead p50 "
                   f"{r['overhead_p50_ms']:.1f} ms, p95 {r['overhead_p95_ms']:.1f} ms, "
                   f"efficiency {r['efficiency']:.3f} ({r['workers']} workers, "
                   f"{r['trials']} trials)")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"kind": "bench storage", "storage": mask_url(url), "epoch_s": epoch_s,
                   "epochs": epochs, **result, "growth": rows}
        out.write_text(json.dumps(payload, indent=2, default=str))
        click.echo(f"wrote {out}")
