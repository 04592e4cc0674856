"""A trial's files once it ends: resume checkpoints deleted, each study's top-k models kept.

Usage: the worker calls ``Objective.after_trial(study, frozen_trial)`` after every trial it
tells (:func:`finish_trial`) and :func:`sweep_checkpoints` in its loop; ``launch export
--models DIR`` copies a study's kept models out (:func:`export_models`).

A *chain* is a trial and every retry of it. They share the first trial's number (the
chain's key) and so one resume checkpoint folder (:func:`psy_agents.paths.checkpoint_dir`),
where training also writes the chain's best epoch's model, ``model/``, at each improvement.

- A chain *ends* when none of its trials is RUNNING or WAITING and none is a FAIL awaiting
  its retry: a FAIL whose ``fail_reason`` ends with :data:`REQUEUED` (preempted, storage
  unreachable, or stale: its worker died) with no retry queued yet and retries left
  (``max_retry``). Then, and only then, its checkpoint folder is deleted: a preempted or
  killed trial's retry always finds its checkpoint, a finished chain leaves nothing behind.
- A trial that ends COMPLETE among the study's top ``keep_models`` COMPLETE trials by value
  (ties: the lower number first) has its staged model moved to
  :func:`psy_agents.paths.model_dir`; a kept model whose trial has left the top-k is deleted.

Races: workers on a shared runs folder tidy it at the same time; the database is the one
source of truth and every step is idempotent. A move and a delete are one rename each
(``os.replace``; a folder is renamed aside before it is removed), so nobody sees half a
folder and the loser of a race finds nothing to rename. A worker deletes a kept model only
if its view of the database shows that trial finished and out of the top-k; a trial out of
the top-k stays out as more trials complete, so an older view never deletes a newer model.
A worker that moves a model reads the database again before it prunes: either it sees every
trial that completed before the move, or the worker of a trial completed after the move sees
the moved folder. The kept set thus converges on the top-k of the final database after the
last trial's :func:`finish_trial`. A worker killed between telling a trial and moving its
model leaves the model staged; :func:`sweep_checkpoints` moves it before deleting the folder.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from psy_agents.errors import ConfigError
from psy_agents.hpo.recovery import REQUEUED
from psy_agents.hpo.spec import SPEC_ATTR, StudySpec, load_spec
from psy_agents.paths import checkpoint_dir, model_dir, models_dir
from psy_agents.training.checkpoint import MODEL_DIR

_TRASH = ".trash-"  # a folder renamed aside to be removed; never a trial's
_PENDING = ("RUNNING", "WAITING")


def chain_of(trial) -> int:
    """The number of the first trial of ``trial``'s chain (a FrozenTrial): itself, or the
    trial it retries (Optuna's ``failed_trial``; see ``RetryHeartbeatStaleTrialCallback``)."""
    return int(trial.system_attrs.get("failed_trial", trial.number))


def kept_models(spec: StudySpec) -> int:
    """How many models ``spec``'s study keeps: ``keep_models`` of its stage; 0 for the
    simulated objective (it trains none) and a refit (its seeds' models are its outputs)."""
    stage = spec.stage_config
    return 0 if spec.objective == "simulated" or stage.is_refit else stage.keep_models


def awaits_retry(trial, retried: set[int], max_retry: int) -> bool:
    """Whether FAIL ``trial`` is still to be retried: re-queued by its reason, no retry
    queued yet (``retried``: numbers that have one), and retries left in its chain."""
    if trial.state.name != "FAIL" or trial.number in retried:
        return False
    if not str(trial.user_attrs.get("fail_reason", "")).endswith(REQUEUED):
        return False
    return len(trial.system_attrs.get("retry_history", ())) < max_retry


def ended_chains(trials: Sequence, max_retry: int) -> set[int]:
    """Keys of the chains of ``trials`` (a study's, all of them) that have ended: no trial
    RUNNING or WAITING and none awaiting a retry. A chain once ended never runs again."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    busy = {chain_of(t) for t in trials
            if t.state.name in _PENDING or awaits_retry(t, retried, max_retry)}
    return {chain_of(t) for t in trials} - busy


def top_numbers(trials: Iterable, k: int) -> list[int]:
    """Numbers of the ``k`` best COMPLETE trials by value (maximized), ties by lower number."""
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    return [t.number for t in sorted(complete, key=lambda t: (-t.value, t.number))[:k]]


def finish_trial(study, trial, *, runs_dir: Path, experiment: str, keep_models: int,
                 max_retry: int, tracker=None) -> None:
    """Tidy the files of ``trial`` (a FrozenTrial of ``study``, already told).

    Keeps its staged model if it is COMPLETE and ranks in the top ``keep_models`` (and logs
    it to ``tracker``), deletes kept models that left the top-k, and deletes its chain's
    checkpoint folder if the chain has ended. Idempotent; safe against concurrent workers
    (module docstring).

    Raises:
        OSError: a folder could not be moved or removed (not: it was already gone).
    """
    name, chain = study.study_name, chain_of(trial)
    trials = study.get_trials(deepcopy=False)
    keep = (keep_models and trial.state.name == "COMPLETE"
            and trial.number in top_numbers(trials, keep_models))
    if keep and _keep_model(checkpoint_dir(runs_dir, experiment, name, chain) / MODEL_DIR,
                            model_dir(runs_dir, experiment, name, trial.number),
                            trial.number, tracker):
        trials = study.get_trials(deepcopy=False)  # see every trial completed before the move
    prune_models(models_dir(runs_dir, experiment, name), trials, keep_models)
    if chain in ended_chains(trials, max_retry):
        remove_dir(checkpoint_dir(runs_dir, experiment, name, chain))


def sweep_checkpoints(study, runs_dir: Path, *, max_retry: int, tracker=None) -> list[int]:
    """Delete the checkpoint folders under ``runs_dir`` of ``study``'s chains that have
    ended (a chain whose retries are exhausted too), first keeping a top-k model still
    staged in one; prune the kept models. Returns the chain keys whose folders it deleted.

    For the trials that end without :func:`finish_trial`: a stale FAIL with no retry left,
    a worker killed between telling a trial and tidying it. Idempotent; folders of chains
    not (yet) in the database are left alone.
    """
    spec = StudySpec.from_json(study.user_attrs[SPEC_ATTR])
    name, keep = study.study_name, kept_models(spec)
    root = checkpoint_dir(runs_dir, spec.experiment, name, 0).parent
    trials = study.get_trials(deepcopy=False)
    ended, top = ended_chains(trials, max_retry), set(top_numbers(trials, keep))
    moved, removed = False, []
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        chain = _trial_number(path)
        if chain is None or chain not in ended:
            continue
        for t in trials:
            if t.number in top and chain_of(t) == chain:
                moved |= _keep_model(path / MODEL_DIR,
                                     model_dir(runs_dir, spec.experiment, name, t.number),
                                     t.number, tracker)
        if remove_dir(path):
            removed.append(chain)
    prune_models(models_dir(runs_dir, spec.experiment, name),
                 study.get_trials(deepcopy=False) if moved else trials, keep)
    return removed


def prune_models(root: Path, trials: Sequence, keep_models: int) -> list[int]:
    """Delete the kept models under ``root`` whose trials this view (``trials``) shows
    finished and outside the top ``keep_models``; return their numbers. A model of a trial
    the view does not show finished is newer than the view and stays."""
    top = set(top_numbers(trials, keep_models))
    finished = {t.number for t in trials if t.state.is_finished()}
    removed = []
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        number = _trial_number(path)
        if number is not None and number in finished and number not in top \
                and remove_dir(path):
            removed.append(number)
    return removed


def remove_dir(path: Path) -> bool:
    """Remove folder ``path``: renamed aside in one step, then deleted. False when it was
    already gone (another worker removed it). Also clears what a killed remover left."""
    trash = path.with_name(f"{_TRASH}{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, onerror=_gone_is_fine)
    for leftover in path.parent.glob(f"{_TRASH}*"):
        shutil.rmtree(leftover, onerror=_gone_is_fine)
    return True


def export_models(storage, name: str, runs_dir: Path, out: Path) -> list[Path]:
    """Copy study ``name``'s kept models (those of its current top-k found under
    ``runs_dir``) to ``out/trial-<n>/`` and write ``out/index.json`` (rank order: trial,
    value, params, dir). Returns the written paths, the index last.

    Raises:
        StorageError: no such study.
        ConfigError: no kept model of the study is under ``runs_dir``.
    """
    study, spec = load_spec(storage, name)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    root = models_dir(runs_dir, spec.experiment, name)
    ranked = [n for n in top_numbers(trials.values(), kept_models(spec))
              if (root / f"trial-{n}").is_dir()]
    if not ranked:
        raise ConfigError(f"study {name} has no kept models under {root} (its stage keeps "
                          f"{kept_models(spec)})", "give --runs-dir the runs folder its workers "
                          "used, after a COMPLETE trial of a training study (a refit's models "
                          "are in <runs>/<experiment>/refit/<agent>/)")
    out.mkdir(parents=True, exist_ok=True)
    paths, index = [], []
    for n in ranked:
        shutil.copytree(root / f"trial-{n}", out / f"trial-{n}", dirs_exist_ok=True)
        paths.append(out / f"trial-{n}")
        index.append({"trial": n, "value": trials[n].value, "params": dict(trials[n].params),
                      "dir": f"trial-{n}"})
    (out / "index.json").write_text(json.dumps(index, indent=2, default=str))
    return [*paths, out / "index.json"]


def _keep_model(staged: Path, dest: Path, number: int, tracker) -> bool:
    """Move ``staged`` to ``dest`` in one rename; True if this call moved it (False: it is
    gone or ``dest`` exists, another worker kept it)."""
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(staged, dest)
    except FileNotFoundError:
        return False
    except OSError as exc:  # dest appeared meanwhile (a non-empty folder cannot be replaced)
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return False
    if tracker is not None:
        tracker.log_model(number, dest)
    return True


def _trial_number(path: Path) -> int | None:
    prefix, _, number = path.name.partition("-")
    return int(number) if prefix == "trial" and number.isdigit() else None


def _gone_is_fine(_func: Any, _path: str, exc_info: Any) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]
