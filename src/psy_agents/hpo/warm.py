"""Warm starts (which configurations a study runs first) and plateau stops (when it stops).

- **Warm start of a narrowed stage** (``warm_start = k`` with ``narrow_from = S``): the first
  worker to enter the stage queues S's ``k`` best configurations — ranked as the narrowing
  ranks them (:func:`psy_agents.hpo.history.trial_score` over S's trials that the narrowing
  reads), so they are the best of the very trials the narrowed space was built around —
  projected into the narrowed space (:func:`project`). A categorical value the narrowed
  space no longer holds (possible only when ``warm_start > top_k``) is left to the sampler;
  the rest of that configuration is still queued.
- **``launch hpo --warm-start OLD``** (:class:`CampaignSeeder`): each *new* study of the
  campaign that samples the full space (not a refit, not a narrowed stage: those get their
  first trials from their source stage) and whose study ``OLD.<agent>.<stage>`` exists
  queues OLD's best COMPLETE configurations, projected into its space. A configuration
  that cannot be projected (a categorical value the new space does not hold) is refused
  before anything is created. Queued, not added as finished trials: each seeded
  configuration is trained again under the new campaign's data, split, epochs and pruner,
  so no value measured under other settings enters the study (nor its narrowing, refit or
  pruner), and each one is one trial of the new budget like any other.
- Both queue through :func:`queue_once`: exactly once per study whatever the number of
  workers or launchers, and never past the budget.
- **Plateau stop** (``stop_after_trials_without_gain = N``): see :func:`plateau_reason` for
  the rule and :func:`stop_on_plateau` for what a worker does with it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from psy_agents.errors import ConfigError, StorageError
from psy_agents.hpo import spaces
from psy_agents.hpo.budget import FINISHED, Counts, count, current_budget
from psy_agents.hpo.history import finished_in_order, finished_states, source_trials, trial_score
from psy_agents.hpo.optuna_private import study_id, study_storage
from psy_agents.hpo.recovery import study_lock
from psy_agents.hpo.results import experiment_list
from psy_agents.hpo.spec import SPEC_ATTR, STOPPED_ATTR, StudySpec, load_spec, study_name

# Study user attr: {"source": study name, "queued": n}, written once the queue is seeded.
WARM_ATTR = "psy_warm_start"
# Trial user attrs of a queued configuration: where it comes from and its rank there (0 =
# best). A retry keeps them, so a configuration is never queued twice.
SOURCE_ATTR, RANK_ATTR = "warm_start_source", "warm_start_rank"
_log = logging.getLogger("psy_agents.worker")


def project(params: dict[str, Any], space: spaces.Space
            ) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``params`` moved into ``space``: (projected params, names that cannot be projected).

    Numeric values are clipped into the range (ints rounded first); a categorical value must
    be one of the choices, and a value of the wrong type cannot be projected either. A
    parameter the space lacks is dropped, one absent from ``params`` is left to the sampler,
    and a conditional one (``when``) is kept only when its condition holds in the projected
    params. Pure.
    """
    out: dict[str, Any] = {}
    lost: list[str] = []
    for p in space:
        if p.name not in params:
            continue
        if p.when is not None and out.get(p.when[0]) != p.when[1]:
            continue
        value = params[p.name]
        if p.kind == "categorical":
            if value in p.choices:
                out[p.name] = value
            else:
                lost.append(p.name)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[p.name] = _clip(p, value)
        else:
            lost.append(p.name)
    return out, tuple(lost)


def _clip(p: spaces.Param, value: float) -> float | int:
    if p.kind == "int":
        return min(max(round(value), math.ceil(p.low)), math.floor(p.high))
    return min(max(float(value), p.low), p.high)


def plateau_reason(values: Sequence[float | None], n: int, min_gain: float) -> str | None:
    """Why a stage should stop, or None: the rule of ``stop_after_trials_without_gain``.

    ``values`` are the finished trials' values in finish order (None for a trial without
    one: pruned). The stage has plateaued when more than ``n`` trials have finished, the
    ones before the last ``n`` hold a value, and none of the last ``n`` beats the best of
    those by at least ``min_gain`` (and by more than 0, so a tie is no gain). Pure.
    """
    if n <= 0 or len(values) <= n:
        return None
    before = [v for v in values[:-n] if v is not None]
    if not before:
        return None
    best = max(before)
    if any(v is not None and v > best and v - best >= min_gain for v in values[-n:]):
        return None
    return f"plateau: {n} trials without a gain of {min_gain:g} over {best:.4f}"


def stop_on_plateau(study, spec: StudySpec) -> bool:
    """True when no new trial may start in ``study`` because it stopped on a plateau.

    Call it holding the study's budget lock (after a successful claim): the check and the
    start of a trial are then one step. The first worker to see the plateau writes the
    reason (:data:`STOPPED_ATTR`, shown by ``launch status``); from then on the study
    samples nothing new. Trials already running finish, and WAITING ones (retries of those,
    queued warm-start configurations) still run, so nothing is left half done. Idempotent.
    """
    stage = spec.stage_config
    if stage.stop_after_trials_without_gain <= 0 or stage.is_refit:
        return False
    if STOPPED_ATTR not in study.user_attrs:
        values = [t.value for t in finished_in_order(study)]
        reason = plateau_reason(values, stage.stop_after_trials_without_gain, stage.min_gain)
        if reason is None:
            return False
        study.set_user_attr(STOPPED_ATTR, reason)
        _log.info("%s: stopped (%s)", study.study_name, reason)
    return not count(study, finished_states()).waiting


def stage_done(study, spec: StudySpec, counts: Counts, verdict: str | None) -> bool:
    """A stage built on ``study`` may read it: its budget is finished (``verdict``, the
    budget's verdict on ``counts``), or it stopped on a plateau and no trial of it runs or
    waits any more."""
    if verdict == FINISHED:
        return True
    return (spec.stage_config.stop_after_trials_without_gain > 0 and not counts.running
            and not counts.waiting and STOPPED_ATTR in study.user_attrs)


def queue_once(study, configs: Sequence[dict[str, Any]], source: str) -> int:
    """Queue ``configs`` (best first) as ``study``'s next trials, once; returns how many
    this call queued.

    Under the study's budget lock, because queued trials are budget: at most the budget's
    room (budget - finished - running - waiting) is queued, and workers claiming a trial
    see the queue whole or not at all. Each trial records its rank; a rank already present
    is not queued again, so a call interrupted half way is completed by the next one, and
    the study attr :data:`WARM_ATTR` then marks the study done. Idempotent.
    """
    if WARM_ATTR in study.user_attrs:
        return 0
    with study_lock(study_storage(study), study_id(study), "budget"):
        if WARM_ATTR in study.user_attrs:
            return 0
        trials = study.get_trials(deepcopy=False)
        present = {t.user_attrs.get(RANK_ATTR) for t in trials}
        c = count(study, finished_states())
        room = max(0, current_budget(study) - c.finished - c.running - c.waiting)
        todo = [i for i in range(len(configs)) if i not in present][:room]
        for rank in todo:
            study.enqueue_trial(dict(configs[rank]),
                                user_attrs={SOURCE_ATTR: source, RANK_ATTR: rank})
        queued = len(present & set(range(len(configs)))) + len(todo)
        study.set_user_attr(WARM_ATTR, {"source": source, "queued": queued})
    return len(todo)


def source_configs(storage, spec: StudySpec, space: spaces.Space) -> list[dict[str, Any]]:
    """The narrowed stage ``spec``'s warm-start configurations: its source stage's best
    ``warm_start``, projected into ``space`` (the narrowed one).

    Raises:
        StorageError: the source stage is not finished.
    """
    stage = spec.stage_config
    source, source_spec = load_spec(storage, study_name(spec.experiment, spec.agent,
                                                        stage.narrow_from))
    first = source_trials(source, source_spec.budget)
    if first is None:
        raise StorageError(f"stage {stage.narrow_from} of {spec.agent} is not finished",
                           "run its workers first")
    best = spaces.top_trials([(t.params, trial_score(t)) for t in first], stage.warm_start)
    return [project(params, space)[0] for params in best]


def warm_start_stage(storage, study, spec: StudySpec, space: spaces.Space) -> None:
    """Queue a narrowed stage's warm start (``warm_start`` > 0) before its first trial;
    does nothing for other stages or once done. Idempotent (:func:`queue_once`)."""
    stage = spec.stage_config
    if stage.warm_start <= 0 or not stage.narrow_from or WARM_ATTR in study.user_attrs:
        return
    source = study_name(spec.experiment, spec.agent, stage.narrow_from)
    queued = queue_once(study, source_configs(storage, spec, space), source)
    if queued:
        _log.info("%s: queued the %d best configurations of %s", study.study_name, queued,
                  source)


class CampaignSeeder:
    """``launch hpo --warm-start OLD``: seeds a campaign's new studies from experiment OLD.

    :func:`psy_agents.hpo.spec.create_campaign` calls :meth:`plan` once its checks pass and
    before it writes anything (so a refusal creates nothing), and :meth:`apply` once the
    studies exist.
    """

    def __init__(self, source_experiment: str, top: int = 10) -> None:
        self.source, self.top = source_experiment, top
        self._plan: list[tuple[str, str, list[dict[str, Any]]]] = []

    def plan(self, storage, new_specs: Sequence[StudySpec]) -> None:
        """Pick and project each new study's configurations.

        Raises:
            ConfigError: OLD is not an experiment of this storage (the message lists those
                it holds), is the campaign's own, holds no study of the campaign's agents
                and stages, or holds a configuration that cannot be projected (the message
                names the parameter and value).
        """
        names = {s.study_name for s in storage.get_all_studies() if SPEC_ATTR in s.user_attrs}
        held = sorted({n.split(".", 1)[0] for n in names})
        if self.source not in held:
            raise ConfigError(f"--warm-start {self.source}: no experiment {self.source!r} in "
                              f"this storage, which holds {experiment_list(held)}",
                              "pass one of them to --warm-start")
        seedable = [s for s in new_specs
                    if not s.stage_config.is_refit and not s.stage_config.narrow_from]
        if any(s.experiment == self.source for s in seedable):
            raise ConfigError(f"--warm-start {self.source} names the campaign's own "
                              "experiment", "warm start from an earlier experiment")
        old = {s.name: study_name(self.source, s.agent, s.stage_config.name) for s in seedable}
        self._plan = [(s.name, old[s.name], self._configs(storage, s, old[s.name]))
                      for s in seedable if old[s.name] in names]
        if seedable and not self._plan:
            raise ConfigError(f"--warm-start {self.source}: it has none of the studies "
                              f"{', '.join(sorted(old.values()))}",
                              "warm start from an experiment of the same agent and stage")

    def _configs(self, storage, spec: StudySpec, old_name: str) -> list[dict[str, Any]]:
        from optuna.trial import TrialState

        old, _ = load_spec(storage, old_name)
        done = [t for t in finished_in_order(old) if t.state == TrialState.COMPLETE]
        ranked = sorted(range(len(done)), key=lambda i: (-done[i].value, i))[: self.top]
        configs = []
        for trial in (done[i] for i in ranked):
            params, lost = project(trial.params, spec.search_space)
            if lost:
                p = next(q for q in spec.search_space if q.name == lost[0])
                choices = ", ".join(map(str, p.choices)) or f"{p.kind} values"
                raise ConfigError(
                    f"--warm-start {self.source}: {lost[0]}={trial.params[lost[0]]!r} of "
                    f"trial #{trial.number} of {old_name} cannot be projected into "
                    f"{spec.name}, whose {lost[0]} takes {choices}",
                    f"search the same choices as {self.source} (or hold {lost[0]} with "
                    "--fix), or warm start from another experiment")
            configs.append(params)
        return configs

    def apply(self, storage) -> list[str]:
        """Queue the planned configurations; a line per seeded study. Idempotent."""
        import optuna

        lines = []
        for name, old_name, configs in self._plan:
            study = optuna.load_study(study_name=name, storage=storage)
            queued = queue_once(study, configs, old_name)
            lines.append(f"{name}: warm start: queued {queued} of the best configurations "
                         f"of {old_name}")
        return lines
