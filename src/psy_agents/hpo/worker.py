"""The worker loop: run trials of a study chain until every stage's budget is finished.

Usage: ``launch worker --study NAME [--study NAME ...] --index I [--storage URL]``.

Each ``--study`` is the first study of an agent's chain (its spec lists the chain); the
worker runs the chains in the order given (its own agent first), each stage until the
study-wide budget of finished (COMPLETE + PRUNED) trials is reached, then moves to the next
stage. Before exiting it waits until no trial of its chains is RUNNING or WAITING, failing
stale ones (dead workers) so that their retries run: nothing is left RUNNING.

Exit codes: 0 all budgets finished; 75 (EX_TEMPFAIL, "requeue me") after SIGTERM/SIGUSR2 —
the running trial was checkpointed and re-queued as WAITING, and a restarted worker resumes
it; 2 a user error (bad storage URL, unknown study, unusable data, or
10 trials in a row failed — a config that always fails).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import signal
import threading
import time
import zlib
from dataclasses import dataclass

from psy_agents.errors import ConfigError, StorageError
from psy_agents.hpo import spaces
from psy_agents.hpo.objective import Objective, TrialFailed
from psy_agents.hpo.spec import NARROWED_ATTR, StudySpec, load_spec, study_name
from psy_agents.hpo.storage import (
    StorageSettings,
    is_postgres,
    is_transient,
    open_storage,
    requeue_orphans,
    retry_callback,
    scrub,
)

EXIT_DONE = 0
EXIT_REQUEUE = 75
# A storage outage is waited out with capped exponential backoff (see blip_wait_s): a
# worker resumes at most ~15 s after the database is back, and gives up after MAX_BLIPS
# failed rounds in a row, about 5 to 9 minutes of outage.
MAX_BLIPS = 40
BLIP_WAIT_MAX_S = 15.0
MAX_FAILS_IN_A_ROW = 10
_log = logging.getLogger("psy_agents.worker")


@dataclass(frozen=True)
class WorkerConfig:
    storage_url: str
    studies: tuple[str, ...]
    index: int
    settings: StorageSettings


def blip_wait_s(blips: int, uniform=random.uniform) -> float:
    """Seconds to wait after the ``blips``-th storage failure in a row: 2, 4, 8, then 15 s,
    each times a jitter in [0.5, 1] so that many workers do not reconnect in lockstep.

    Why capped: uncapped doubling left a worker asleep for 32 s after a 30 s outage had
    ended; the cap bounds that delay, the count (MAX_BLIPS) bounds the outage waited out.
    """
    return min(2.0 ** blips, BLIP_WAIT_MAX_S) * uniform(0.5, 1.0)


def finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


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


def make_pruner(spec: StudySpec):
    import optuna

    stage = spec.stage_config
    if stage.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if stage.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=stage.epochs,
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def finished_in_order(study) -> list:
    """COMPLETE + PRUNED trials in completion order (ties by number): the same on every worker."""
    trials = study.get_trials(deepcopy=False, states=finished_states())
    return sorted(trials, key=lambda t: (t.datetime_complete, t.number))


def trial_score(trial) -> float:
    """COMPLETE: its value; PRUNED: its last reported value (ranks below similar completes)."""
    if trial.value is not None:
        return float(trial.value)
    if trial.intermediate_values:
        return float(trial.intermediate_values[max(trial.intermediate_values)])
    return float("-inf")


def stage_space(storage, study, spec: StudySpec) -> spaces.Space:
    """The space this study samples: the full one, or narrowed from its source stage.

    The first worker to compute a narrowed space stores it in the study's user attrs and
    later workers read it back, so every worker samples one space even if the source
    study's trials are later re-ordered by clock skew.
    """
    stage = spec.stage_config
    if not stage.narrow_from:
        return spec.search_space
    stored = study.user_attrs.get(NARROWED_ATTR)
    if stored is not None:
        _log.info("%s: space narrowed from %s (stored) sha=%s", study.study_name,
                  stage.narrow_from, _sha(stored))
        return spaces.space_from_json(stored)
    source, source_spec = load_spec(storage, study_name(spec.experiment, spec.agent,
                                                        stage.narrow_from))
    first = finished_in_order(source)[: source_spec.budget]
    if len(first) < source_spec.budget:
        raise StorageError(f"stage {stage.narrow_from} of {spec.agent} has {len(first)} of "
                           f"{source_spec.budget} finished trials", "run its workers first")
    narrowed = spaces.narrow(spec.search_space, [(t.params, trial_score(t)) for t in first],
                             stage.top_k, stage.margin)
    as_json = spaces.space_to_json(narrowed)
    _log.info("%s: space narrowed from %s (computed) sha=%s", study.study_name,
              stage.narrow_from, _sha(as_json))
    study.set_user_attr(NARROWED_ATTR, as_json)
    return narrowed


def _sha(space_json) -> str:
    blob = json.dumps(space_json, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_tracker(spec: StudySpec, name: str):
    """An MLflow tracker for ``name`` when MLFLOW_TRACKING_URI is set, else None."""
    from psy_agents.tracking import Tracker

    stage = spec.stage_config
    params = {"agent": spec.agent, "stage": stage.name, "budget": spec.budget,
              "objective": spec.objective, "pruner": stage.pruner, "epochs": stage.epochs,
              "backbones": ",".join(spec.backbones), "base_seed": spec.base_seed,
              "data_hash": spec.data_hash, "split_hash": spec.split_hash}
    return Tracker.from_env(spec.experiment, name, params)


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
        self.storage = open_storage(self.cfg.storage_url, self.cfg.settings)
        async_commit(self.storage, self.cfg.storage_url)
        chains = [load_spec(self.storage, name)[1].chain for name in self.cfg.studies]
        for chain in chains:
            for name in chain:
                if self._run_study(name) == EXIT_REQUEUE:
                    return EXIT_REQUEUE
        return self._drain([name for chain in chains for name in chain])

    def _run_study(self, name: str) -> int:
        study, spec = load_spec(self.storage, name)
        if spec.stage_config.is_refit:
            from psy_agents.hpo.refit import run_refit

            return run_refit(self, study, spec)
        import optuna

        seen = len(study.get_trials(deepcopy=False))
        study = optuna.load_study(study_name=name, storage=self.storage,
                                  sampler=make_sampler(spec, self.cfg.index, seen),
                                  pruner=make_pruner(spec))
        objective = Objective(spec, stage_space(self.storage, study, spec), study_name=name,
                              worker_index=self.cfg.index, stop=self.stop,
                              tracker=make_tracker(spec, name))
        return self.optimize(study, objective, spec.budget, finished_states())

    def optimize(self, study, objective: Objective, budget: int, states) -> int:
        """Run trials until ``budget`` trials in ``states`` exist and none waits for a retry."""
        from optuna.study import MaxTrialsCallback
        from optuna.trial import TrialState

        budget_cb = MaxTrialsCallback(budget, states=states)
        blips = 0
        self._fails = []
        requeue: int | None = None  # a trial that a storage blip failed: retry it
        while not self.stop.is_set():
            try:
                if requeue is not None:
                    self._requeue(study, requeue, preempted=False)
                    requeue = None
                sweep_stale(study)
                done = len(study.get_trials(deepcopy=False, states=states))
                waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
                if done >= budget and waiting == 0:
                    return EXIT_DONE
                study.optimize(objective, catch=(TrialFailed,),
                               callbacks=[budget_cb, self._log_trial(time.monotonic(), objective),
                                          self._stop_cb])
                blips = 0
                self._check_failures(study.study_name)
            except Exception as exc:
                # Preempted: ours (simulated) or the training loop's class of the same name.
                if type(exc).__name__ == "Preempted":
                    self._requeue(study, objective.current_trial)
                    return EXIT_REQUEUE
                if not is_transient(exc) or blips >= MAX_BLIPS:
                    raise
                blips += 1
                requeue = objective.current_trial if requeue is None else requeue
                wait_s = blip_wait_s(blips)
                _log.warning("[w%d] storage blip (%s); retrying in %.1f s", self.cfg.index,
                             scrub(type(exc).__name__, self.cfg.storage_url), wait_s)
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
                retry_callback(self.cfg.settings.max_retry)(study, trial)
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
                sweep_stale(study)
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if waiting and self._run_study(name) == EXIT_REQUEUE:
                    return EXIT_REQUEUE
                busy = busy or bool(study.get_trials(deepcopy=False, states=pending))
            if not busy:
                return EXIT_DONE
            self.stop.wait(poll_s)
            poll_s = min(2 * poll_s, float(self.cfg.settings.heartbeat_interval_s))
        return EXIT_REQUEUE


def sweep_stale(study) -> None:
    """Fail the trials of dead workers and make sure every one of them has its retry."""
    import optuna

    optuna.storages.fail_stale_trials(study)
    requeue_orphans(study)


def async_commit(storage, url: str) -> None:
    """Postgres: this worker's commits stop waiting for the WAL flush (``synchronous_commit
    off`` on its sessions).

    Why: a trial makes ~40 small commits (params, user attrs, one report per epoch), and
    waiting for each fsync was a third of the per-trial overhead `launch bench storage`
    measured. A Postgres *server* crash can lose the last fraction of a second of commits,
    never corrupt them; the trial concerned then looks RUNNING, its heartbeat goes stale and
    it is retried from its checkpoint — the path a killed worker already takes.
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


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
