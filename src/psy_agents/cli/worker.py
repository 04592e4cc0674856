"""Usage: launch worker --study NAME [--study NAME ...] --index I [--storage URL]

Runs one HPO worker: trials of the given study chains until every stage's budget is done.
Every backend (local, slurm, k8s) starts this same command.

Exit codes: 0 done (no study in its chains has budget left); 75 "requeue me" (EX_TEMPFAIL)
after SIGTERM or SIGUSR2 — the running trial was checkpointed and re-queued, so restart the
worker; 2 user error (bad storage URL, unknown study, unusable data).
"""

from __future__ import annotations

import logging

import click

HELP = """Run one HPO worker on the given study chains until their budgets are finished.

\b
Storage: --storage, else env PSY_STORAGE, else sqlite:///runs/optuna.db.
Heartbeats: env PSY_HEARTBEAT_INTERVAL_S (default 60), PSY_GRACE_PERIOD_S (default 180).
Exit codes: 0 done; 75 requeue me (after SIGTERM/SIGUSR2; the trial is
checkpointed and re-queued); 2 user error.
"""


def own_chain_first(studies: tuple[str, ...], index: int) -> tuple[str, ...]:
    """The chains in worker ``index``'s order of preference.

    Every worker gets the same ``--study`` list (backends start one identical command), so
    the preference is derived from the index: with ``--agent all`` the pool spreads over the
    four agents instead of all workers crowding the first one.
    """
    k = index % len(studies)
    return studies[k:] + studies[:k]


@click.command("worker", help=HELP)
@click.option("--study", "studies", multiple=True, required=True,
              help="First study of a chain ({experiment}.{agent}.{stage}); repeatable. "
                   "Worker I starts with chain I mod the number of chains (its own agent) "
                   "and helps the others once its own has no budget left.")
@click.option("--index", type=click.IntRange(min=0), required=True,
              help="Worker index (seeds the sampler from base_seed, the index and the "
                   "trials already in the study).")
@click.option("--storage", default=None,
              help="Optuna storage URL [env: PSY_STORAGE; default sqlite:///runs/optuna.db].")
def worker(studies: tuple[str, ...], index: int, storage: str | None) -> int:
    from psy_agents.hpo.storage import StorageSettings, resolve_url
    from psy_agents.hpo.worker import Worker, WorkerConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    cfg = WorkerConfig(storage_url=resolve_url(storage),
                       studies=own_chain_first(tuple(studies), index), index=index,
                       settings=StorageSettings.from_env())
    return Worker(cfg).run()
