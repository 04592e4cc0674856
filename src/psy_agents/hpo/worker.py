"""The worker loop: run trials of a study chain until every stage's budget is finished.

Usage: ``launch worker --study NAME [--study NAME ...] --index I [--storage URL]``.

Each ``--study`` is the first study of an agent's chain (its spec lists the chain); the
worker runs the chains in the order given (its own agent first). In each stage it starts
trials while the study-wide budget has room (finished + running below the budget, claimed
under a lock: :mod:`psy_agents.hpo.budget`), then moves to the next stage; a stage that
builds on another (narrowing, refit) first waits for that one to finish, running its
retries meanwhile. A narrowed stage with ``warm_start`` first queues its source's best
configurations, and a stage with ``stop_after_trials_without_gain`` stops taking trials on a
plateau and counts as finished (:mod:`psy_agents.hpo.warm`). Before exiting it waits until
no trial of its chains is RUNNING or WAITING, failing stale ones (dead workers) so that their
retries run: nothing is left RUNNING.

Exit codes: 0 all budgets finished; 75 (EX_TEMPFAIL, "requeue me") after SIGTERM/SIGUSR2 —
the running trial was checkpointed and re-queued as WAITING, and a restarted worker resumes
it; 2 a user error (bad storage URL, unknown study, unusable data, or
10 trials in a row failed — a config that always fails).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import zlib
from dataclasses import dataclass

from psy_agents.errors import EXIT_REQUEUE, ConfigError, Preempted, TrialFailed
from psy_agents.hpo.budget import FINISHED, BudgetGate, count, current_budget
from psy_agents.hpo.connect import StorageSettings, is_transient, open_storage
from psy_agents.hpo.history import finished_states, stage_space
from psy_agents.hpo.models import sweep_checkpoints
from psy_agents.hpo.objective import Objective, release_memory
from psy_agents.hpo.pruners import make_pruner
from psy_agents.hpo.recovery import requeue_orphans, retry_callback
from psy_agents.hpo.refit import refit_study, write_summary
from psy_agents.hpo.spec import StudySpec, load_spec, study_name
from psy_agents.hpo.storage_url import is_postgres, scrub
from psy_agents.hpo.warm import stage_done, stop_on_plateau, warm_start_stage
from psy_agents.settings import Settings
from psy_agents.tracking import Tracker

EXIT_DONE = 0
# A storage outage is waited out with capped exponential backoff (see blip_wait_s): a
# worker resumes at most ~15 s after the database is back, and gives up after MAX_BLIPS
# failed rounds in a row, about 5 to 9 minutes of outage.
MAX_BLIPS = 40
BLIP_WAIT_MAX_S = 15.0
MAX_FAILS_IN_A_ROW = 10
_log = logging.getLogger("psy_agents.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker is handed by its command line.

    Attributes:
        settings: the storage URL and this machine's data, runs and cache folders.
        studies: the first study of each chain, in this worker's order of preference.
        index: the worker's index (seeds its sampler).
        connection: heartbeat, retry and pool settings of the storage connection.
    """

    settings: Settings
    studies: tuple[str, ...]
    index: int
    connection: StorageSettings = StorageSettings()


def blip_wait_s(blips: int, uniform=random.uniform) -> float:
    """Seconds to wait after the ``blips``-th storage failure in a row: 2, 4, 8, then 15 s,
    each times a jitter in [0.5, 1] so that many workers do not reconnect in lockstep.

    Capped so a worker reconnects within 15 s of the database returning; MAX_BLIPS rounds
    wait out at least 4 minutes of outage.
    """
    return min(2.0 ** blips, BLIP_WAIT_MAX_S) * uniform(0.5, 1.0)


def sampler_seed(base_seed: int, index: int, n_trials_seen: int, study: str = "") -> int:
    """The sampler seed of worker ``index`` joining ``study`` when it already holds
    ``n_trials_seen`` trials.

    Why the trial count: a worker restarted after a crash or a requeue would otherwise
    replay the same random start-up draws and sample the configs it already tried. Why the
    study name: each stage of a chain would otherwise start with the previous stage's draws.
    """
    return base_seed + index + 100_003 * n_trials_seen + zlib.crc32(study.encode()) % 1_000_003


def make_sampler(spec: StudySpec, index: int, n_trials_seen: int = 0):
    """TPE (multivariate, constant liar) seeded per worker, study and history."""
    import optuna

    return optuna.samplers.TPESampler(
        multivariate=True, group=True, constant_liar=True,
        n_startup_trials=max(spec.n_startup_trials, spec.n_workers),
        seed=sampler_seed(spec.base_seed, index, n_trials_seen, spec.name))


def make_tracker(spec: StudySpec, name: str, uri: str | None) -> Tracker | None:
    """An MLflow tracker for study ``name`` when a tracking ``uri`` is given, else None."""
    stage = spec.stage_config
    params = {"agent": spec.agent, "stage": stage.name, "budget": spec.budget,
              "objective": spec.objective, "pruner": stage.pruner, "epochs": stage.epochs,
              "backbones": ",".join(spec.backbones), "base_seed": spec.base_seed,
              "data_hash": spec.data_hash, "split_hash": spec.split_hash}
    return Tracker.maybe(uri, spec.experiment, name, params)


class Worker:
    """One worker process. ``run()`` returns the exit code."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.storage = None
        self._fails: list[str] = []

    def _on_signal(self, signum, _frame) -> None:
        _log.warning("[w%d] got %s: checkpointing and exiting with %d (requeue me)",
                     self.cfg.index, signal.Signals(signum).name, EXIT_REQUEUE)
        self.stop.set()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)
        self.storage = open_storage(self.cfg.settings.storage, self.cfg.connection)
        async_commit(self.storage, self.cfg.settings.storage)
        chains = [load_spec(self.storage, name)[1].chain for name in self.cfg.studies]
        for chain in chains:
            for name in chain:
                source = self._source_of(name)
                if source and self._await_finished(source) == EXIT_REQUEUE:
                    return EXIT_REQUEUE
                if self._run_study(name) == EXIT_REQUEUE:
                    return EXIT_REQUEUE
        return self._drain([name for chain in chains for name in chain])

    def _source_of(self, name: str) -> str | None:
        """The study that ``name`` narrows from or refits, if any."""
        _, spec = load_spec(self.storage, name)
        stage = spec.stage_config
        source = stage.narrow_from or stage.refit_from
        return study_name(spec.experiment, spec.agent, source) if source else None

    def _await_finished(self, name: str) -> int:
        """Wait until study ``name``'s budget is finished, running its retries (and any
        budget that a failed trial gives back) meanwhile: a stage built on it reads its
        finished trials. EXIT_DONE, or EXIT_REQUEUE when asked to stop."""
        poll_s = 0.2
        while not self.stop.is_set():
            study, spec = load_spec(self.storage, name)
            self._sweep(study)
            counts = count(study, counted_states(spec))
            verdict = counts.verdict(current_budget(study))
            if stage_done(study, spec, counts, verdict):  # budget finished, or a plateau stop
                return EXIT_DONE
            if verdict is None and self._run_study(name) == EXIT_REQUEUE:
                return EXIT_REQUEUE
            self.stop.wait(poll_s)
            poll_s = min(2 * poll_s, float(self.cfg.connection.heartbeat_interval_s))
        return EXIT_REQUEUE

    def _sweep(self, study) -> None:
        """Fail stale trials (their retries get queued), then delete the checkpoints of
        trial chains that ended without a tell here (retries exhausted, a killed worker)."""
        sweep_stale(study)
        sweep_checkpoints(study, self.cfg.settings.runs_dir,
                          max_retry=self.cfg.connection.max_retry)

    def _run_study(self, name: str) -> int | str:
        """Run trials of ``name`` while its budget has room: EXIT_REQUEUE, or the budget's
        verdict (FINISHED, FULL) when no trial may start."""
        study, spec = load_spec(self.storage, name)
        if spec.stage_config.is_refit:
            return self._run_refit(name, spec)
        import optuna

        seen = len(study.get_trials(deepcopy=False))
        study = optuna.load_study(study_name=name, storage=self.storage,
                                  sampler=make_sampler(spec, self.cfg.index, seen),
                                  pruner=make_pruner(spec.stage_config))
        space = stage_space(self.storage, study, spec)
        warm_start_stage(self.storage, study, spec, space)  # queued before any is sampled
        objective = Objective(spec, space, study_name=name,
                              worker_index=self.cfg.index, stop=self.stop,
                              settings=self.cfg.settings,
                              tracker=make_tracker(spec, name, self.cfg.settings.tracking_uri),
                              max_retry=self.cfg.connection.max_retry)
        return self.optimize(study, objective, counted_states(spec))

    def _run_refit(self, name: str, spec: StudySpec) -> int | str:
        """Refit seeds while the budget (seeds) has room; the summary is written, once, by
        a worker that finds every seed COMPLETE."""
        study, objective = refit_study(self.storage, name, spec, worker_index=self.cfg.index,
                                       stop=self.stop, settings=self.cfg.settings,
                                       max_retry=self.cfg.connection.max_retry)
        verdict = self.optimize(study, objective, counted_states(spec))
        if verdict == FINISHED:
            write_summary(study, objective)
        return verdict

    def optimize(self, study, objective: Objective, states) -> int | str:
        """Run trials, one claim of the budget each (:class:`BudgetGate`), until none may
        start. ``states`` count as finished. Returns EXIT_REQUEUE, or the budget's verdict
        (FINISHED, or FULL: the rest of the budget runs on other workers)."""
        blips = 0
        self._fails = []
        requeue: int | None = None  # a trial that a storage blip failed: retry it
        while not self.stop.is_set():
            wait_s = 0.0
            try:
                if requeue is not None:
                    self._requeue(study, requeue, preempted=False)
                    requeue = None
                sweep_stale(study)
                gate = BudgetGate(study, states)
                verdict = gate.claim()
                if verdict is None and stop_on_plateau(study, objective.spec):  # lock held
                    gate.release()
                    verdict = FINISHED
                if verdict is not None:
                    return verdict
                try:
                    study.optimize(gate.wrap(objective), n_trials=1, catch=(TrialFailed,),
                                   callbacks=[self._log_trial(time.monotonic(), objective),
                                              objective.after_trial, self._stop_cb])
                finally:
                    gate.release()
                blips = 0
                self._check_failures(study.study_name)
            except Exception as exc:
                if isinstance(exc, Preempted):
                    self._requeue(study, objective.current_trial)
                    return EXIT_REQUEUE
                if not is_transient(exc) or blips >= MAX_BLIPS:
                    raise
                blips += 1
                requeue = objective.current_trial if requeue is None else requeue
                wait_s = blip_wait_s(blips)
                _log.warning("[w%d] storage blip (%s); retrying in %.1f s", self.cfg.index,
                             scrub(type(exc).__name__, self.cfg.settings.storage), wait_s)
            if wait_s:  # after the handler, which held the error and so the trial's run
                release_memory()  # no after_trial callback ran for the interrupted trial
                self.stop.wait(wait_s)
        return EXIT_REQUEUE

    def _stop_cb(self, study, trial) -> None:
        from optuna.trial import TrialState

        failed = trial.state == TrialState.FAIL
        self._fails = [*self._fails, trial.user_attrs.get("fail_reason", "")] if failed else []
        if self.stop.is_set() or len(self._fails) >= MAX_FAILS_IN_A_ROW:
            study.stop()

    def _check_failures(self, name: str) -> None:
        """One bad trial never stops a worker; a config that always fails does."""
        if len(self._fails) >= MAX_FAILS_IN_A_ROW:
            raise ConfigError(f"{len(self._fails)} trials of {name} failed in a row; last "
                              f"reason: {self._fails[-1]}", "fix the study's settings and "
                              "relaunch; each trial's fail_reason is in `launch export`")

    def _log_trial(self, started: float, objective: Objective):
        last = [started]

        def log(study, trial) -> None:
            if objective.tracker is not None:
                objective.tracker.end_trial(trial.number, trial.state.name, trial.value,
                                            trial.user_attrs.get("metrics", {}))
            now = time.monotonic()
            shown = ", ".join(f"{k}={_short(v)}" for k, v in sorted(trial.params.items()))
            value = "" if trial.value is None else f" value={trial.value:.4f}"
            extra = trial.user_attrs.get("fail_reason") or trial.user_attrs.get("note") or ""
            _log.info("[w%d] %s #%d %s%s epochs=%s %.1fs %s%s", self.cfg.index, study.study_name,
                      trial.number, trial.state.name, value, trial.user_attrs.get("epochs_run"),
                      now - last[0], shown, f" ({extra})" if extra else "")
            last[0] = now
        return log

    def _requeue(self, study, number: int | None, *, preempted: bool = True) -> None:
        """Re-queue a preempted (or storage-failed) trial as WAITING (same params, same
        checkpoint key). Does nothing unless trial ``number`` is FAIL: one still RUNNING
        is retried by the stale-trial path instead."""
        from optuna.trial import TrialState

        for trial in study.get_trials(deepcopy=True, states=(TrialState.FAIL,)):
            if trial.number == number:
                if preempted:
                    study.set_user_attr(f"preempted_{number}", True)
                retry_callback(self.cfg.connection.max_retry)(study, trial)
                _log.warning("[w%d] trial #%d re-queued for resume", self.cfg.index, number)

    def _drain(self, names: list[str]) -> int:
        """Wait until no trial of ``names`` is RUNNING/WAITING; run retries that appear."""
        import optuna
        from optuna.trial import TrialState

        pending = (TrialState.RUNNING, TrialState.WAITING)
        poll_s = 0.2  # others' last trials usually end soon; back off towards the heartbeat
        while not self.stop.is_set():
            busy = False
            for name in names:
                study = optuna.load_study(study_name=name, storage=self.storage)
                self._sweep(study)
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if waiting and self._run_study(name) == EXIT_REQUEUE:
                    return EXIT_REQUEUE
                busy = busy or bool(study.get_trials(deepcopy=False, states=pending))
            if not busy:
                return EXIT_DONE
            self.stop.wait(poll_s)
            poll_s = min(2 * poll_s, float(self.cfg.connection.heartbeat_interval_s))
        return EXIT_REQUEUE


def sweep_stale(study) -> None:
    """Fail the trials of dead workers and make sure every one of them has its retry."""
    import optuna

    optuna.storages.fail_stale_trials(study)
    requeue_orphans(study)


def async_commit(storage, url: str) -> None:
    """Postgres: this worker's commits stop waiting for the WAL flush (``synchronous_commit
    off`` on its sessions).

    A trial makes ~40 small commits (params, user attrs, one report per epoch); none waits
    for an fsync. A Postgres *server* crash can lose the last fraction of a second of
    commits, never corrupt them; the trial concerned then looks RUNNING, its heartbeat goes
    stale and it is retried from its checkpoint — the path a killed worker already takes.
    """
    if not is_postgres(url):
        return
    import sqlalchemy

    def on_connect(dbapi_conn, _record) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SET synchronous_commit TO off")
        dbapi_conn.commit()  # SET is transactional: the pool's reset-on-return would undo it

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened before the listener lack the setting


def counted_states(spec: StudySpec) -> tuple:
    """The trial states a study's budget counts: COMPLETE + PRUNED; a refit's, COMPLETE."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE,) if spec.stage_config.is_refit else finished_states()


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
