"""Usage: launch worker --study NAME [--study NAME ...] --index I [--procs K | --gpu-share K]

Runs one HPO worker: trials of the given study chains until every stage's budget is done.
Every backend (local, slurm, k8s) starts this same command. Everything a worker needs comes
from this command line and its environment, which its backend writes: the storage URL
(env ``PSY_STORAGE``, a secret: never on a command line), the study chains and index, and
where data, checkpoints and the cache live on this machine (``--data-dir``, ``--runs-dir``,
``--cache-dir``). Nothing of the launcher's file system is assumed.

Several workers per GPU: ``--procs K`` makes this command a GPU slot that runs K worker
processes, indices ``I*K`` to ``I*K+K-1``, each started as this same command with
``--gpu-share K`` (its 1/K of the GPU's memory) instead of ``--procs``; SIGTERM and SIGUSR2
are forwarded to them (see :mod:`psy_agents.backends.slot`).

Exit codes: 0 done (no study in its chains has budget left); 75 "requeue me" (EX_TEMPFAIL)
after SIGTERM or SIGUSR2 — the running trial was checkpointed and re-queued, so restart the
worker; 2 user error (bad storage URL, unknown study, unusable data). With ``--procs K`` the
codes of the K processes combine: 75 if any asked to be requeued, else 2 if any met a user
error, else 0 only if all exited 0, else the first failure's code.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from psy_agents.cli.options import shared_options
from psy_agents.errors import EXIT_REQUEUE, StorageUnavailable
from psy_agents.settings import STORAGE_ENV, Settings

HELP = f"""Run one HPO worker on the given study chains until their budgets are finished.

\b
Exit codes: 0 done; {EXIT_REQUEUE} requeue me (after SIGTERM/SIGUSR2; the trial is
checkpointed and re-queued, or the storage did not answer at start: try again later);
2 user error. With --procs K: {EXIT_REQUEUE} if any process
asked to be requeued, else 2 if any met a user error, else 0 only if all exited 0.
"""
# The CUDA allocator maps memory in growable segments instead of fixed blocks, so the memory
# a trial of one shape frees fits the next trial's other shapes (less fragmentation between
# trials). Set for this process (and a slot's children) before torch initializes CUDA; a
# value the user set is kept.
ALLOC_CONF = ("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
# Options a --procs slot sets itself for its children, and the storage URL, which the
# children inherit through PSY_STORAGE (a secret stays off command lines).
_SLOT_SET = ("procs", "gpu_share", "index", "storage")


def own_chain_first(studies: tuple[str, ...], index: int) -> tuple[str, ...]:
    """The chains in worker ``index``'s order of preference.

    Every worker gets the same ``--study`` list (backends start one identical command), so
    the preference is derived from the index: with ``--agent all`` the pool spreads over the
    four agents instead of all workers crowding the first one.
    """
    k = index % len(studies)
    return studies[k:] + studies[:k]


def child_argv(ctx: click.Context) -> list[str]:
    """This command line for one child of a ``--procs`` slot, without the options the slot
    sets itself (``--procs``, ``--gpu-share``, ``--index``) and without the storage URL."""
    argv = [sys.executable, "-m", "psy_agents.cli.main", "worker"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if not isinstance(param, click.Option) or param.name in _SLOT_SET or value is None:
            continue
        for item in value if param.multiple else (value,):
            argv += [param.opts[0], str(item)]
    return argv


@click.command("worker", help=HELP)
@click.option("--study", "studies", multiple=True, required=True,
              help="First study of a chain ({experiment}.{agent}.{stage}); repeatable. "
                   "Worker I starts with chain I mod the number of chains (its own agent) "
                   "and helps the others once its own has no budget left.")
@click.option("--index", type=click.IntRange(min=0), required=True,
              help="Worker index (seeds the sampler from base_seed, the index and the "
                   "trials already in the study).")
@click.option("--procs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run K worker processes in this one GPU slot, indices I*K to I*K+K-1, "
                   "each with --gpu-share K; SIGTERM/SIGUSR2 are forwarded to them "
                   "(`launch hpo --workers-per-gpu K` writes it).")
@click.option("--gpu-share", type=click.IntRange(min=1), default=1, show_default=True,
              help="This worker shares its GPU with K-1 others: it may use 1/K of the GPU's "
                   "memory (nothing to set without CUDA).")
@click.option("--heartbeat-interval-s", type=click.IntRange(min=1), default=60,
              show_default=True, envvar="PSY_HEARTBEAT_INTERVAL_S",
              help="Seconds between a running trial's heartbeats "
                   "[env: PSY_HEARTBEAT_INTERVAL_S].")
@click.option("--grace-period-s", type=click.IntRange(min=2), default=180, show_default=True,
              envvar="PSY_GRACE_PERIOD_S",
              help="A trial without a heartbeat for this long is failed and retried "
                   "elsewhere [env: PSY_GRACE_PERIOD_S].")
# The cache is a folder of this machine: never the launcher's PSY_CACHE_DIR, which a Slurm
# task inherits with the rest of the submitting shell's environment.
@shared_options("storage", "data_dir", "runs_dir", "cache_dir", "tracking_uri",
                cache_dir={"envvar": None, "help": "Built tiny models and tokenized features "
                           "[default: <runs-dir>/cache; not read from the environment]."})
def worker(studies: tuple[str, ...], index: int, procs: int, gpu_share: int,
           heartbeat_interval_s: int, grace_period_s: int, settings: Settings) -> int:
    os.environ.setdefault(*ALLOC_CONF)
    from psy_agents.backends.slot import run_slot, share_gpu_memory
    from psy_agents.hpo.connect import StorageSettings
    from psy_agents.hpo.worker import Worker, WorkerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    if procs > 1:
        if gpu_share > 1:
            raise click.UsageError("--procs K gives each of its K processes --gpu-share K; "
                                   "drop --gpu-share")
        return run_slot(child_argv(click.get_current_context()), procs, index,
                        env={STORAGE_ENV: settings.storage})
    fraction = share_gpu_memory(gpu_share)
    if fraction is not None:
        logging.getLogger("psy_agents.worker").info(
            "[w%d] GPU memory share: %.3g of each visible GPU", index, fraction)
    connection = StorageSettings(heartbeat_interval_s=heartbeat_interval_s,
                                 grace_period_s=grace_period_s)
    cfg = WorkerConfig(settings=settings, studies=own_chain_first(tuple(studies), index),
                       index=index, connection=connection)
    try:
        return Worker(cfg).run()
    except StorageUnavailable as exc:
        # A database that is down now may be up when the backend starts this worker again;
        # exit 2 would tell every backend not to (k8s fails the index, local gives up).
        exc.exit_code = EXIT_REQUEUE
        raise
