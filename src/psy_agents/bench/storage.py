"""Runs ``launch bench storage``: N real worker processes on one simulated study.

The workers are real ``launch worker`` processes (the real loop, storage, sampler and
pruner); only the objective is the simulated one (:mod:`psy_agents.hpo.simulated`), whose
epoch durations are a seeded function of the trial's params — so the work of every trial
is recomputed exactly from the database afterwards, and the baselines replay the same
durations. The study may be seeded with finished trials first (``history``), to see how the
per-trial overhead grows with the study's size.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psy_agents.backends.base import worker_command
from psy_agents.backends.local import cpu_threads_env, die_with_parent
from psy_agents.bench.stats import TrialTiming
from psy_agents.errors import BackendError
from psy_agents.hpo import spaces
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.simulated import epoch_seconds, epoch_value
from psy_agents.hpo.spec import CampaignOverrides, create_campaign, load_spec
from psy_agents.hpo.stages import StageConfig
from psy_agents.hpo.storage_url import is_postgres
from psy_agents.settings import DEFAULT_DATA_DIR, STORAGE_ENV

AGENT = "criteria"


@dataclass(frozen=True)
class PoolSpec:
    """One measured pool. ``epoch_s`` is the mean simulated epoch; ``history`` the number
    of finished trials added to the study before the workers start."""

    storage_url: str
    n_workers: int
    trials: int
    epochs: int = 6
    epoch_s: float = 1.0
    history: int = 0
    seed: int = 0
    runs_dir: Path = Path("runs/bench")


@dataclass(frozen=True)
class PoolRun:
    study: str
    timings: tuple[TrialTiming, ...]
    wall_s: float  # process spawn -> last worker exited
    cold_start_s: tuple[float, ...]  # per worker: spawn -> its first trial start
    max_connections: int | None  # Postgres only
    states: dict[str, int]


def new_experiment(prefix: str = "bench") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_study(spec: PoolSpec, experiment: str, *, trials: int | None = None,
                 epochs: int | None = None, pruner: str = "asha") -> str:
    """Create the simulated study (budget = history + trials) and return its name."""
    budget = spec.history + (spec.trials if trials is None else trials)
    epochs = spec.epochs if epochs is None else epochs
    stage = StageConfig(name="s1", trials=budget, epochs=epochs, patience=epochs, pruner=pruner)
    sim = {"epoch_s": spec.epoch_s, "seed": spec.seed}
    o = CampaignOverrides(objective="simulated", sim=sim, base_seed=spec.seed)
    camp = create_campaign(spec.storage_url, experiment=experiment, agents=[AGENT],
                           stages=(stage,), n_workers=spec.n_workers, overrides=o)
    return camp.study_names[0]


def _distribution(p: spaces.Param):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "categorical":
        return CategoricalDistribution(list(p.choices))
    if p.kind == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return FloatDistribution(p.low, p.high, log=p.log)


def _random_params(space: spaces.Space, rng: random.Random) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in space:
        if p.when is not None and params.get(p.when[0]) != p.when[1]:
            continue
        if p.kind == "categorical":
            params[p.name] = rng.choice(p.choices)
        elif p.kind == "int":
            params[p.name] = rng.randint(int(p.low), int(p.high))
        elif p.log:
            params[p.name] = math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
        else:
            params[p.name] = rng.uniform(p.low, p.high)
    return params


def add_history(storage_url: str, study_name: str, n: int, *, seed: int,
                batch: int = 250) -> None:
    """Add ``n`` finished trials (random params, simulated learning curves; a third pruned
    early) to the study, in batches, without running anything."""
    import optuna
    from optuna.trial import TrialState


    study, spec = load_spec(open_storage(storage_url), study_name)
    space, rng = spec.search_space, random.Random(seed)
    dists = {p.name: _distribution(p) for p in space}
    made = []
    for _ in range(n):
        params = _random_params(space, rng)
        epochs = int(params.get("epochs", spec.stage_config.epochs))
        ran = rng.randint(1, epochs) if rng.random() < 1 / 3 else epochs
        curve = {e: epoch_value(params, space, e, spec.sim) for e in range(ran)}
        made.append(optuna.trial.create_trial(
            state=TrialState.PRUNED if ran < epochs else TrialState.COMPLETE,
            value=None if ran < epochs else max(curve.values()), params=params,
            distributions={k: dists[k] for k in params}, intermediate_values=curve,
            user_attrs={"bench_history": True}))
    for i in range(0, len(made), batch):
        study.add_trials(made[i:i + batch])


def trial_work_s(params: dict[str, Any], epochs_run: int, sim: dict[str, Any]) -> float:
    """Seconds the simulated objective slept for a trial that ran ``epochs_run`` epochs."""
    return sum(epoch_seconds(params, e, sim) for e in range(epochs_run))


def collect(storage_url: str, study_name: str) -> tuple[list[TrialTiming], dict[str, int]]:
    """Timings of the trials the workers ran (not the seeded history) and state counts."""
    study, spec = load_spec(open_storage(storage_url), study_name)
    timings, states = [], {}
    for t in study.get_trials(deepcopy=False):
        if "worker_index" not in t.user_attrs:
            continue
        states[t.state.name] = states.get(t.state.name, 0) + 1
        if t.datetime_complete is None or "epochs_run" not in t.user_attrs:
            continue
        timings.append(TrialTiming(
            worker=int(t.user_attrs["worker_index"]), start=t.datetime_start.timestamp(),
            end=t.datetime_complete.timestamp(),
            work_s=trial_work_s(t.params, int(t.user_attrs["epochs_run"]), spec.sim)))
    return timings, states


def worker_cmd(study: str, index: int, runs_dir: Path, data_dir: Path) -> list[str]:
    """The real ``launch worker`` command, with this machine's folders (the storage URL
    travels in the environment, as on every backend)."""
    head = (sys.executable, "-m", "psy_agents.cli.main")
    return [*worker_command(head, (study,), data_dir=str(Path(data_dir).resolve()),
                            runs_dir=str(Path(runs_dir).resolve())), "--index", str(index)]


class ConnectionPeak:
    """Polls pg_stat_activity for the psy-agents connections to this database; keeps the max."""

    def __init__(self, storage_url: str, every_s: float = 0.25) -> None:
        self.url, self.every_s, self.peak = storage_url, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psycopg2
        import sqlalchemy

        dsn = sqlalchemy.make_url(self.url).set(drivername="postgresql")
        conn = psycopg2.connect(dsn.render_as_string(hide_password=False))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self._stop.wait(self.every_s):
                    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                "current_database() AND application_name = 'psy-agents'")
                    self.peak = max(self.peak, int(cur.fetchone()[0]))
        finally:
            conn.close()

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_workers(study: str, storage_url: str, n_workers: int, log_dir: Path, *,
                runs_dir: Path, data_dir: Path = DEFAULT_DATA_DIR,
                timeout_s: float = 1800) -> tuple[float, list[float]]:
    """Start ``n_workers`` real worker processes and wait for all; returns (wall seconds,
    spawn times as epoch seconds). Workers keep checkpoints under ``runs_dir`` and read
    data from ``data_dir``; their logs go to ``log_dir``.

    Raises:
        BackendError: a worker exited with a non-zero code (the message names its log).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    procs, spawned = [], []
    t0 = time.perf_counter()
    for i in range(n_workers):
        log = open(log_dir / f"worker-{i}.log", "w")  # noqa: SIM115 - closed below
        spawned.append(time.time())
        env = {**os.environ, **cpu_threads_env(n_workers), STORAGE_ENV: storage_url}
        procs.append((subprocess.Popen(worker_cmd(study, i, runs_dir, data_dir), env=env,
                                       stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=die_with_parent()), log))
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=timeout_s))
        finally:
            log.close()
    wall = time.perf_counter() - t0
    bad = [(i, c) for i, c in enumerate(codes) if c != 0]
    if bad:
        i, code = bad[0]
        raise BackendError(f"benchmark worker {i} exited with {code}",
                           f"read {log_dir / f'worker-{i}.log'}")
    return wall, spawned


def run_pool(spec: PoolSpec, experiment: str | None = None) -> PoolRun:
    """Create (and seed) the study, run the pool, and collect the timings."""
    experiment = experiment or new_experiment()
    study = create_study(spec, experiment)
    if spec.history:
        add_history(spec.storage_url, study, spec.history, seed=spec.seed)
    log_dir = spec.runs_dir / experiment
    if is_postgres(spec.storage_url):
        with ConnectionPeak(spec.storage_url) as peak:
            wall, spawned = run_workers(study, spec.storage_url, spec.n_workers, log_dir,
                                        runs_dir=spec.runs_dir)
        conns: int | None = peak.peak
    else:
        wall, spawned = run_workers(study, spec.storage_url, spec.n_workers, log_dir,
                                    runs_dir=spec.runs_dir)
        conns = None
    timings, states = collect(spec.storage_url, study)
    firsts = {}
    for t in timings:
        firsts[t.worker] = min(firsts.get(t.worker, t.start), t.start)
    cold = tuple(firsts[i] - spawned[i] for i in sorted(firsts))
    return PoolRun(study, tuple(timings), wall, cold, conns, states)


def measure_cold_start(spec: PoolSpec, experiment: str, samples: int) -> list[float]:
    """Seconds a fresh worker process needs to run one trial of (almost) no work: Python
    start, imports, storage connection, study load, ask, tell, exit — what a
    process-per-trial launcher pays per trial. Run one after another (no CPU contention)."""
    from dataclasses import replace

    quick = replace(spec, epoch_s=0.001, history=0, n_workers=1)
    out = []
    for k in range(samples):
        study = create_study(quick, f"{experiment}-cold{k}", trials=1, epochs=1, pruner="none")
        wall, _ = run_workers(study, spec.storage_url, 1, spec.runs_dir / f"{experiment}-cold{k}",
                              runs_dir=spec.runs_dir)
        out.append(wall)
    return out
