"""Usage: launch hpo --agent A [--plan multi|max | --stages s0,s1] [--workers N] [--backend B]

The front door: creates the schema and every study of the campaign once (so N workers never
race to create them), stores the full spec in the database, then asks the backend to start
N copies of `launch worker`. With the local backend it stays in the foreground until the
workers finish; with slurm/k8s it returns after submitting (``--follow`` keeps watching).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.backends.base import worker_command
from psy_agents.cli.backend_options import backend_options
from psy_agents.cli.hpo_checks import (
    check_data,
    check_outcome,
    one_device,
    parse_fixed,
    refuse_local_storage,
)
from psy_agents.cli.options import shared_options
from psy_agents.errors import ConfigError
from psy_agents.settings import STORAGE_ENV, Settings

FOLLOW_EVERY_S = 5.0


def _agents(agent: str) -> tuple[str, ...]:
    return AGENT_NAMES if agent == "all" else (agent,)


def _stages(plan: str | None, stage: str | None,
            stages: str | None) -> str | tuple[str, ...]:
    if sum(x is not None for x in (plan, stage, stages)) > 1:
        raise click.UsageError("give one of --plan, --stage or --stages")
    if stage:
        return (stage,)
    if stages:
        return tuple(s.strip() for s in stages.split(",") if s.strip())
    return plan or "multi"


def _plan_stages(chain: str | tuple[str, ...], stages_file: Path | None):
    """The stages to create. A stage may build on one outside ``chain`` (``--stage s2``
    narrows from the s1 of an earlier run of the same experiment): its sources are loaded
    only so the file's narrow/refit rules are checked, and are not created again."""
    from psy_agents.config import read_toml
    from psy_agents.hpo.stages import load_plan, load_stages, stages_path

    if isinstance(chain, str):
        return load_plan(chain, stages_file)
    tables = read_toml(stages_path(stages_file)).get("stages", {})
    sources: list[str] = []
    for name in chain:
        table = tables.get(name, {})
        src = table.get("narrow_from") or table.get("refit_from")
        while src and src not in chain and src not in sources:
            sources.insert(0, src)
            table = tables.get(src, {})
            src = table.get("narrow_from") or table.get("refit_from")
    loaded = load_stages([*sources, *chain], stages_file)
    return loaded[len(sources):]


def _check_sources(url: str, experiment: str, agents: tuple[str, ...], plan_stages) -> None:
    """Fail before anything is created when a stage builds on a study that does not exist."""
    from psy_agents.errors import StorageError
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.spec import study_name

    names = {s.name for s in plan_stages}
    outside = [(s.name, s.narrow_from or s.refit_from) for s in plan_stages
               if (s.narrow_from or s.refit_from) and (s.narrow_from or s.refit_from) not in names]
    if not outside:
        return
    try:
        storage = open_storage(url)
        existing = {s.study_name for s in storage.get_all_studies()}
    except StorageError:
        existing = set()  # no storage yet: certainly no source study in it
    for stage, source in outside:
        for agent in agents:
            if study_name(experiment, agent, source) not in existing:
                raise ConfigError(
                    f"stage {stage} builds on study {study_name(experiment, agent, source)}, "
                    "which does not exist in this storage",
                    f"run stage {source} first (`launch hpo --agent {agent} --stage {source} "
                    f"--experiment {experiment}`) or pass --stages {source},{stage}")


def _worker_argv(backend: str, options: Any, studies: tuple[str, ...],
                 paths: tuple[str, str]) -> tuple[str, ...]:
    """The worker command every backend starts (it appends ``--index I``), with the data
    and runs folders as the workers see them (``paths``, from ``Backend.worker_paths``).

    In a container (k8s, or Slurm with an Apptainer image) it is the image's ``launch``
    console script: this interpreter's path does not exist in there. Elsewhere it is this
    very interpreter (or the ``python`` a Slurm profile names for the nodes), so a worker
    uses the launcher's environment whatever PATH says.
    """
    in_container = backend == "k8s" or bool(getattr(options, "apptainer_image", None))
    # a Slurm site whose nodes run another Python (``--slurm-python``) runs the worker there
    python = getattr(options, "python", None)
    interpreter = tuple(shlex.split(python)) if python else (sys.executable,)
    head = ("launch",) if in_container else (*interpreter, "-m", "psy_agents.cli.main")
    data_dir, runs_dir = paths
    return worker_command(head, studies, data_dir=data_dir, runs_dir=runs_dir)


def campaign_over(rows) -> bool:
    """Every study's budget is finished and no trial is RUNNING or WAITING (for a retry)."""
    return bool(rows) and all(r.ended for r in rows)


def _follow(storage_url: str, experiment: str, backend, handle, every_s: float) -> None:
    """Show the campaign's progress line on stderr (live on a terminal, else a line each
    time it changes) until the campaign is over.

    Raises:
        BackendError: every worker has ended (succeeded, failed or stopped) while the
            campaign is not over, so waiting longer would wait forever.
    """
    from contextlib import closing

    from psy_agents.cli.progress import LiveLines
    from psy_agents.errors import BackendError
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.results import all_status, progress_line

    ended = {"succeeded", "failed", "stopped"}
    storage = open_storage(storage_url)
    # closing(): the live line ends before whatever follows (summary, error, Ctrl-C).
    with closing(LiveLines(click.get_text_stream("stderr"))) as out:
        while True:
            # Workers first, then the database: workers that ended before this read have
            # written everything they will ever write, so the rows below are final for them.
            workers = backend.status(handle)
            rows = all_status(storage, experiment)
            out.show([progress_line(rows)])
            if campaign_over(rows):
                return
            if workers and all(w.state in ended for w in workers):
                summary = ", ".join(f"{w.index}: {w.state}" for w in workers)
                logs = str(handle.data.get("folder", "the runs dir")).replace("%j",
                                                                              handle.job_id)
                raise BackendError(f"every {handle.backend} worker of {experiment} has ended "
                                   f"({summary}) but the campaign is not finished",
                                   f"read the worker logs under {logs} and relaunch the same "
                                   "`launch hpo` command to resume")
            time.sleep(every_s)


def _start_watched(be, req, storage_url: str, experiment: str):
    """``registry.start``; on the local backend, which blocks until its workers are done,
    with the live progress line on stderr beside it (stopped however ``start`` ends)."""
    from psy_agents.backends.registry import start
    from psy_agents.cli.progress import LiveLines, ProgressReporter, campaign_reader

    if be.name != "local":
        return start(be, req)
    out = LiveLines(click.get_text_stream("stderr"))
    with ProgressReporter(campaign_reader(storage_url, experiment), out):
        return start(be, req)


def _summary(storage_url: str, experiment: str) -> None:
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.results import all_status, status_lines

    for line in status_lines(all_status(open_storage(storage_url), experiment)):
        click.echo(line)


@click.command("hpo")
@click.option("--agent", required=True, type=click.Choice([*AGENT_NAMES, "all"]),
              help="Agent to tune; `all` gives the four agents' chains one worker pool.")
@click.option("--plan", default=None, help="Stage plan from the stages file: `multi` "
              "(s0 -> s1 -> s2 -> refit, the default) or `max` (the maximal search).")
@click.option("--stage", default=None, help="One stage alone, e.g. `max` or `s1`.")
@click.option("--stages", default=None, metavar="S0,S1,...",
              help="Explicit stage chain, e.g. `s1` or `s0,s1,s2,refit`.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of workers sharing the studies: GPU slots (local slots, Slurm "
                   "array tasks, pods), each running --workers-per-gpu worker processes.")
@click.option("--workers-per-gpu", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="PSY_WORKERS_PER_GPU",
              help="Worker processes per GPU slot, N*K in all: each gets 1/K of the GPU's "
                   "memory, for models that use a small part of a GPU (MiniLM). With "
                   "--gpus-per-worker 0 the K processes share the slot's CPUs "
                   "[env: PSY_WORKERS_PER_GPU].")
@click.option("--backbone", "backbones", multiple=True,
              help="Backbone(s) to search over: tiny, minilm, a local dir or a hub name "
                   "[default: tiny]. Repeat to search over several.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Override every stage's study-wide trial budget (quick runs).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Override every stage's epoch cap (quick runs).")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Override the refit stage's number of seeds.")
@click.option("--gpus-per-worker", type=click.IntRange(min=0), default=None,
              help="GPUs per worker: 0 for CPU-only workers, else 1 (a trial trains on one "
                   "device, so more would idle and are refused) [default: 1 on slurm and "
                   "k8s; local: 1 when GPUs are visible, else 0].")
@click.option("--fix", "fixed", multiple=True, metavar="KEY=VALUE",
              help="Hold a training setting for every trial and leave it out of the "
                   "search, e.g. --fix max_length=256 (repeatable; keys and values as in "
                   "params.json, the value read as JSON where it parses).")
@click.option("--objective", type=click.Choice(["train", "simulated"]), default="train",
              show_default=True, help="`simulated` is the synthetic benchmark workload "
              "(no model is trained); use it to test a cluster set-up.")
@click.option("--warm-start", default=None, metavar="EXPERIMENT",
              help="Seed each new study (stages sampling the full space) with the best "
                   "COMPLETE configurations of the same agent and stage in EXPERIMENT, an "
                   "earlier campaign in this storage: queued, projected into this campaign's "
                   "space, they run first and each is one trial of the budget.")
@click.option("--warm-start-trials", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many of EXPERIMENT's best configurations --warm-start queues per study.")
@click.option("--dry-run", is_flag=True,
              help="Print what the backend would submit (sbatch script, Job YAML); "
                   "create nothing.")
@click.option("--follow", is_flag=True,
              help="slurm/k8s: keep showing progress until the campaign ends.")
@shared_options("experiment", "storage", "data_dir", "runs_dir", "stages_file")
@backend_options
def hpo(agent: str, plan: str | None, stage: str | None, stages: str | None, workers: int,
        workers_per_gpu: int, backbones: tuple[str, ...], trials: int | None,
        epochs: int | None, seeds: int | None, gpus_per_worker: int | None,
        fixed: tuple[str, ...], objective: str, warm_start: str | None,
        warm_start_trials: int, dry_run: bool, follow: bool,
        settings: Settings, backend: str, backend_options) -> int:
    """Start a hyperparameter search: create the studies, then start N workers.

    \b
    Examples:
      launch hpo --agent criteria                       # local, 1 worker, SQLite, tiny model
      launch hpo --agent joint --workers 16 --backend slurm --slurm-partition gpu
      launch hpo --agent all --stage max --workers 64 --backend k8s --dry-run
      launch hpo --agent criteria --experiment e2 --warm-start e1
    """
    from psy_agents.backends.base import LaunchRequest, next_launch
    from psy_agents.backends.registry import get_backend
    from psy_agents.hpo.spec import CampaignOverrides, create_campaign, study_name
    from psy_agents.hpo.storage_url import absolute_sqlite, mask_url
    from psy_agents.hpo.warm import CampaignSeeder

    chain = _stages(plan, stage, stages)
    fixed_train = parse_fixed(fixed)
    plan_stages = _plan_stages(chain, settings.stages_file)
    url = absolute_sqlite(settings.storage)
    experiment = settings.experiment
    be = get_backend(backend, backend_options)
    gpus_per_worker = one_device(be.default_gpus_per_worker() if gpus_per_worker is None
                                 else gpus_per_worker)
    first_studies = tuple(study_name(experiment, a, plan_stages[0].name) for a in _agents(agent))
    paths = be.worker_paths(settings.data_dir, settings.runs_dir)
    req = LaunchRequest(
        experiment=experiment, n_workers=workers,
        worker_argv=_worker_argv(backend, backend_options, first_studies, paths),
        run_dir=settings.experiment_dir.resolve(), secret_env_names=(STORAGE_ENV,),
        secret_values={STORAGE_ENV: url}, gpus_per_worker=gpus_per_worker,
        options=backend_options, workers_per_gpu=workers_per_gpu,
        launch=next_launch(settings.experiment_dir.resolve()))
    # Everything a real launch checks is checked before the dry run prints and before
    # anything is created: the artefact renders (GPU slots), the data loads.
    refuse_local_storage(backend, url)
    rendered = be.render(req)
    check_data(settings.data_dir, objective)
    if dry_run:
        click.echo(rendered)
        return 0
    be.check_available()
    _check_sources(url, experiment, _agents(agent), plan_stages)
    overrides = CampaignOverrides(
        objective=objective, trials=trials, epochs=epochs, seeds=seeds,
        backbones=tuple(backbones) or ("tiny",), train=fixed_train)
    campaign = create_campaign(url, experiment=experiment, agents=_agents(agent),
                               stages=plan_stages, n_workers=workers * workers_per_gpu,
                               overrides=overrides,
                               data_dir=settings.data_dir, stages_file=settings.stages_file,
                               seeder=CampaignSeeder(warm_start, warm_start_trials)
                               if warm_start else None)
    for line in (*campaign.changes, *campaign.seeded):
        click.echo(line, err=True)
    joined = len(campaign.changes)
    made = f"created {len(campaign.all_studies) - joined}" + (f" and joined {joined}"
                                                               if joined else "")
    each = f", {workers_per_gpu} processes each" if workers_per_gpu > 1 else ""
    click.echo(f"{made} studies in {mask_url(url)}; starting {workers} {backend} "
               f"worker(s){each}", err=True)
    handle = _start_watched(be, req, url, experiment)
    if backend != "local":
        click.echo(f"submitted {backend} job {handle.job_id} "
                   f"(`launch status --experiment {experiment}`, "
                   f"`launch cancel --experiment {experiment} "
                   f"--runs-dir {settings.runs_dir}`)", err=True)
        if follow:
            _follow(url, experiment, be, handle, every_s=FOLLOW_EVERY_S)
    _summary(url, experiment)
    if backend == "local" or follow:
        check_outcome(url, experiment, handle)
    return 0
