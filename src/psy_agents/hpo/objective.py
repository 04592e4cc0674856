"""The trial objective: sample params, run (training or the simulated workload), classify.

One :class:`Objective` per (worker, study). Per trial it records ``worker_index``, ``pid``,
``original_trial`` (the trial a retry descends from), ``epochs_run`` and
``resumed_from_epoch`` in the trial's user attrs. Checkpoints live under the worker's runs
folder (:func:`psy_agents.paths.checkpoint_dir`, keyed by the original trial's number) so
that a retried trial resumes where the original stopped; a training trial also writes its
best epoch's model there. When a trial ends, :meth:`Objective.after_trial` keeps that model
if the trial ranks in the study's top-k and deletes the checkpoint folder once no retry can
need it (:mod:`psy_agents.hpo.models`). Errors are classified:

- out of memory (any CUDA allocation failure: :data:`ALLOCATION_FAILURES`) -> PRUNED, with
  ``note`` in the user attrs;
- a bad configuration (ConfigError, ModelError, ValueError, any other trial error)
  -> FAIL with ``fail_reason`` in the user attrs (the worker goes on);
- a stop request (SIGTERM/SIGUSR2) -> :class:`Preempted`, which ends the worker;
- DataError / StorageError / transient storage errors propagate to the worker loop.

Whatever the outcome, a finished trial's run (model, optimizer, batches) is freed before the
next trial starts: :func:`release_memory` runs after every trial, and an error's traceback
frames are cleared before it leaves :meth:`Objective.__call__` (:func:`drop_frames`).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from psy_agents.data.prepare import prepare_data
from psy_agents.errors import DataError, Preempted, StorageError, TrialFailed
from psy_agents.hpo import spaces
from psy_agents.hpo.connect import StorageSettings, is_transient, with_retry
from psy_agents.hpo.models import chain_of, finish_trial, kept_models
from psy_agents.hpo.optuna_private import frozen_copy
from psy_agents.hpo.recovery import REQUEUED, duplicate_of
from psy_agents.hpo.simulated import run_simulated
from psy_agents.hpo.spec import StudySpec
from psy_agents.paths import checkpoint_dir
from psy_agents.settings import Settings
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training

_log = logging.getLogger(__name__)


def original_number(trial, frozen=None) -> int:
    """The number of the first trial in this trial's retry chain (itself if not a retry)."""
    return chain_of(frozen or frozen_copy(trial))


# Messages of the CUDA allocation failures that torch raises as a plain RuntimeError (not
# as torch.cuda.OutOfMemoryError): the caching allocator's own message in some code paths,
# a kernel's cudaErrorMemoryAllocation, and the cuBLAS / cuDNN / cuFFT / cuSOLVER / cuSPARSE
# handles or workspaces that could not be allocated. Each one is out of memory, not a bug.
ALLOCATION_FAILURES = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_NOT_ENOUGH_MEMORY",
    "CUFFT_ALLOC_FAILED",
    "CUSOLVER_STATUS_ALLOC_FAILED",
    "CUSPARSE_STATUS_ALLOC_FAILED",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for host or device memory exhaustion: matched by type, and by message only for
    a RuntimeError (see :data:`ALLOCATION_FAILURES`)."""
    # torch's OOM class is matched only if torch is loaded: an exception cannot be one
    # before that, and classifying an error never imports torch.
    torch = sys.modules.get("torch")
    if isinstance(exc, MemoryError) or (
            torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in ALLOCATION_FAILURES)


def classify(exc: BaseException) -> tuple[str, str]:
    """("prune" | "fail" | "raise", reason) for an exception raised by a trial."""
    reason = f"{type(exc).__name__}: {exc}".strip()
    if is_out_of_memory(exc):
        return "prune", f"out of memory: {reason}"
    if isinstance(exc, Preempted | DataError | StorageError) or is_transient(exc):
        return "raise", reason
    return "fail", reason


class Objective:
    """Callable objective for ``study.optimize``; ``current_trial`` is the running number."""

    def __init__(self, spec: StudySpec, space: spaces.Space, *, study_name: str,
                 worker_index: int, stop: threading.Event, settings: Settings,
                 tracker=None, max_retry: int = StorageSettings.max_retry) -> None:
        """``settings``: the worker's own (its data, runs and cache folders); ``max_retry``:
        the storage's retries per chain (a checkpoint is kept while one may come)."""
        self.spec, self.space, self.study_name = spec, space, study_name
        self.settings, self.max_retry = settings, max_retry
        self.keep_models = kept_models(spec)
        self.worker_index, self.stop, self.tracker = worker_index, stop, tracker
        self.current_trial: int | None = None
        self._data = None

    def __call__(self, trial) -> float:
        import optuna

        self.current_trial = trial.number
        frozen = frozen_copy(trial)
        original = original_number(trial, frozen)
        twin = duplicate_of(trial.study, frozen)
        if twin is not None:  # a second retry of one failed trial: #twin runs it
            reason = (f"duplicate retry of #{frozen.system_attrs['retry_history'][-1]}: #{twin} "
                      "already retries it (queued twice across a database restart); not run")
            for key, value in (("original_trial", original), ("duplicate_of", twin),
                               ("fail_reason", reason)):
                _set_attr(trial, key, value)
            self.current_trial = None
            raise TrialFailed(reason)
        params = spaces.suggest(trial, self.space)
        if self.tracker is not None:
            self.tracker.start_trial(trial.number, params)
        for key, value in (("worker_index", self.worker_index), ("pid", os.getpid()),
                           ("original_trial", original)):
            _set_attr(trial, key, value)
        try:
            value, epochs_run, resumed, stopped = self._run(trial, params, original)
        except Exception as exc:
            drop_frames(exc)
            action, reason = classify(exc)
            if action == "raise":
                if isinstance(exc, Preempted):  # every FAIL says why
                    _set_attr(trial, "fail_reason", f"preempted ({reason[:300]}); {REQUEUED}")
                elif is_transient(exc):
                    _note_blip(trial, reason)
                raise
            key = "note" if action == "prune" else "fail_reason"
            _set_attr(trial, key, reason[:500])
            self.current_trial = None  # ended by its own verdict: nothing to re-queue
            if action == "prune":
                raise optuna.TrialPruned(reason) from exc
            raise TrialFailed(reason) from exc
        _set_attr(trial, "epochs_run", epochs_run)
        _set_attr(trial, "resumed_from_epoch", resumed)
        self.current_trial = None
        if stopped == "pruned":
            raise optuna.TrialPruned(f"pruned after {epochs_run} epochs")
        return value

    def after_trial(self, study, trial) -> None:
        """Called by the worker after ``trial`` (a FrozenTrial) is told, whatever its state:
        frees what is left of its run (:func:`release_memory`), keeps its model if it ranks
        in the study's top-k, prunes the kept models and deletes its chain's checkpoint
        folder once no retry can need it (:func:`psy_agents.hpo.models.finish_trial`).
        Idempotent.

        A file system error is one warning (``sweep_checkpoints`` tries again later); a
        storage error propagates to the worker loop, which waits it out.
        """
        release_memory()
        try:
            finish_trial(study, trial, runs_dir=self.settings.runs_dir,
                         experiment=self.spec.experiment, keep_models=self.keep_models,
                         max_retry=self.max_retry, tracker=self.tracker)
        except OSError as exc:
            _log.warning("trial #%d: its files were not tidied (%s); the next sweep retries",
                         trial.number, exc)

    def _report(self, trial):
        def report(value: float, epoch: int) -> bool:
            with_retry(lambda: trial.report(value, epoch), what="trial.report")
            if self.tracker is not None:
                self.tracker.log_epoch(trial.number, epoch, value)
            return with_retry(trial.should_prune, what="should_prune")
        return report

    def _run(self, trial, params: dict[str, Any], original: int):
        ckpt = self.checkpoint_dir(original)
        stage = self.spec.stage_config
        if self.spec.objective == "simulated":
            out = run_simulated(params, self.space, epochs=int(params.get("epochs", stage.epochs)),
                                sim=self.spec.sim, checkpoint_dir=ckpt, report=self._report(trial),
                                wait=self.stop.wait)
            return out.best_value, out.epochs_run, out.resumed_from_epoch, out.stopped
        # The best epoch's model is staged beside the checkpoint (model/) for after_trial.
        result = self._train(params, original, ckpt, self._report(trial),
                             output_dir=ckpt if self.keep_models else None)
        _set_attr(trial, "best_epoch", result.best_epoch)
        _set_attr(trial, "metrics", {k: float(v) for k, v in result.metrics.items()})
        return result.best_value, result.epochs_run, result.resumed_from_epoch, result.stopped

    def checkpoint_dir(self, original: int) -> Path:
        """Where trial ``original`` (and each retry of it) keeps its resume checkpoint."""
        return checkpoint_dir(self.settings.runs_dir, self.spec.experiment, self.study_name,
                              original)

    def train_config(self, params: dict[str, Any], seed: int):
        """TrainConfig = training defaults < stage settings < sampled params < seed."""
        stage = self.spec.stage_config
        base = {"agent": self.spec.agent, "backbone": self.spec.backbones[0],
                "epochs": stage.epochs, "patience": stage.patience,
                "train_fraction": stage.train_fraction}
        merged = {**base, **self.spec.train_defaults, **params, "seed": seed}
        return TrainConfig.from_dict(merged, source=f"trial params of {self.study_name}")

    def data(self):
        """The prepared data, loaded once per objective and checked against the spec."""
        if self._data is None:
            # A read-only data volume: the splits file goes under the worker's runs folder.
            data = prepare_data(self.settings.data_dir,
                                fallback_splits_dir=self.settings.runs_dir / "splits")
            if self.spec.split_hash and data.split_hash != self.spec.split_hash:
                raise DataError(f"the split of {self.settings.data_dir} (hash {data.split_hash[:12]}) "
                                f"differs from the study's ({self.spec.split_hash[:12]})",
                                "give workers the same data and splits file as the launcher")
            self._data = data
        return self._data

    def _train(self, params, original: int, ckpt: Path, report, *, eval_split: str = "val",
               output_dir: Path | None = None, keep: str = "best"):
        cfg = self.train_config(params, self.spec.base_seed + original)
        stage = self.spec.stage_config
        return run_training(cfg, self.data(), report=report, checkpoint_dir=ckpt,
                            output_dir=output_dir, eval_split=eval_split,
                            stop_requested=self.stop.is_set, keep=keep,
                            cache_dir=self.settings.cache,
                            checkpoint_every=stage.checkpoint_every,
                            eval_every=stage.eval_every, compile_encoder=stage.compile)


def drop_frames(exc: BaseException) -> None:
    """Clear the local variables of the finished frames in ``exc``'s traceback, and in those
    of its causes and contexts.

    The traceback lines stay (logs still show where it failed); what goes is every local
    of the trial's run (optimizer, batches, activations, and the model unless a frame's
    closure holds it), so an exception kept after the trial holds little. Optuna keeps the
    exception it catches in a reference cycle: the rest goes with the garbage collection of
    :func:`release_memory`.
    """
    todo, seen = [exc], set()
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        traceback.clear_frames(err.__traceback__)  # skips the frames still running
        todo += [err.__cause__, err.__context__]


def release_memory() -> None:
    """Collect a finished trial's garbage and return the CUDA allocator's cached blocks.

    Idempotent and cheap when there is nothing to free; never initializes CUDA (nor imports
    torch) just to empty a cache that cannot hold anything.
    """
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _note_blip(trial, reason: str) -> None:
    """Record a storage outage as the trial's fail_reason, once, if the storage answers.

    The worker re-queues the trial when the storage is back; if it cannot be written now,
    the trial stays RUNNING and the stale-trial path records its reason instead.
    """
    try:
        trial.set_user_attr("fail_reason", f"storage unreachable ({reason[:300]}); {REQUEUED}")
    except Exception as exc:
        if not is_transient(exc):
            raise
        _log.warning("trial #%d: storage still unreachable; its reason is recorded later",
                     trial.number)


def _set_attr(trial, key: str, value: Any) -> None:
    with_retry(lambda: trial.set_user_attr(key, value), what=f"set_user_attr({key})")
