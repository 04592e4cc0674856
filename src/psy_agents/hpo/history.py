"""A study's finished trials, read the same way by every worker.

A stage that builds on another (narrowing, refit) reads the source stage's first ``budget``
finished trials in completion order, so every worker computes the same next space or picks
the same best configuration, whichever worker gets there first.
"""

from __future__ import annotations

import hashlib
import json
import logging

from psy_agents.errors import StorageError
from psy_agents.hpo import spaces
from psy_agents.hpo.spec import NARROWED_ATTR, STOPPED_ATTR, StudySpec, load_spec, study_name

_log = logging.getLogger("psy_agents.worker")


def finished_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def finished_in_order(study) -> list:
    """COMPLETE + PRUNED trials in completion order (ties by number): the same on every worker."""
    trials = study.get_trials(deepcopy=False, states=finished_states())
    return sorted(trials, key=lambda t: (t.datetime_complete, t.number))


def source_trials(source, budget: int) -> list | None:
    """The finished trials that a stage built on ``source`` reads: the first ``budget`` in
    completion order, or all of them once ``source`` stopped on a plateau
    (:data:`STOPPED_ATTR`) and none of its trials runs or waits any more (the set can no
    longer change). None while they are not all there."""
    from optuna.trial import TrialState

    first = finished_in_order(source)[:budget]
    if len(first) >= budget:
        return first
    pending = source.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    return first if STOPPED_ATTR in source.user_attrs and not pending else None


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
    first = source_trials(source, source_spec.budget)
    if first is None:
        raise StorageError(f"stage {stage.narrow_from} of {spec.agent} has "
                           f"{len(finished_in_order(source))} of {source_spec.budget} finished "
                           "trials", "run its workers first")
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
