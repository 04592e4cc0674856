"""Study specs and campaigns: everything a worker needs, stored in the database.

A study is one (experiment, agent, stage), named ``{experiment}.{agent}.{stage}``. The
launcher creates the schema and *every* study of every agent's chain once
(:func:`create_campaign`) and stores a :class:`StudySpec` as JSON in each study's user
attrs; a worker needs only the storage URL, a study name, its index, and where data and
checkpoints live on its own machine (its command line says; see ``Backend.worker_paths``).
A spec holds only what is the same on every machine (plan, space, data and split hashes),
never a path.

A campaign grows: running ``launch hpo`` again on an existing experiment joins its studies
(new workers share them), and a larger ``--trials`` (``--seeds`` for a refit) raises their
budgets. A study's identity is what changes its results (:func:`identity`): worker count,
sampler start-up and budget are not part of it; anything else that differs is refused.
Every launch appends to the study's budget history (:data:`BUDGET_HISTORY_ATTR`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from psy_agents.config import from_mapping
from psy_agents.data.prepare import prepare_data
from psy_agents.errors import ConfigError, StorageError
from psy_agents.hpo import spaces
from psy_agents.hpo.connect import StorageSettings, create_schema_once
from psy_agents.hpo.optuna_private import study_id, study_storage
from psy_agents.hpo.recovery import study_lock
from psy_agents.hpo.stages import StageConfig, load_plan, load_stages
from psy_agents.hpo.storage_url import mask_url
from psy_agents.settings import DEFAULT_DATA_DIR

SPEC_ATTR = "psy_spec"
# Keys that specs written by earlier versions held (launcher paths); dropped when read.
_RETIRED_KEYS = ("data_dir", "runs_dir")
NARROWED_ATTR = "psy_narrowed_space"
# Why a stage stopped before its budget (a plateau: :mod:`psy_agents.hpo.warm`); a study
# with it takes no new trials, and the stages built on it read what it finished.
STOPPED_ATTR = "psy_stopped"
# A refit's one-line result (test value mean ± std, interval, baseline), for `launch status`.
REFIT_SUMMARY_ATTR = "psy_refit_summary"
# A list of {"budget": int, "at": ISO-8601 UTC, "workers": int}, one entry per launch that
# created, joined or extended the study.
BUDGET_HISTORY_ATTR = "psy_budget_history"
# Spec keys that change no result: the worker count and the sampler's start-up (derived
# from it), and the budget, which may grow.
_NOT_IDENTITY = ("n_workers", "n_startup_trials", "budget")
# Stage keys that change no result: those sizing the budget (and the plateau stop ending
# it), seeding the queue, how many models are kept, how often a checkpoint is written (a
# resume is exact from any checkpointed epoch) and whether the encoder is compiled.
_NOT_IDENTITY_STAGE = ("trials", "trials_per_agent", "seeds", "keep_models", "checkpoint_every",
                       "warm_start", "stop_after_trials_without_gain", "min_gain", "compile")


def study_name(experiment: str, agent: str, stage: str) -> str:
    return f"{experiment}.{agent}.{stage}"


@dataclass(frozen=True)
class StudySpec:
    """The full, JSON-serialisable description of one study.

    ``objective`` = "train" runs the real training; "simulated" is the benchmark/test
    workload of :mod:`psy_agents.hpo.simulated` (never a fallback for "train").
    ``space`` is the full space; a stage with ``narrow_from`` narrows it at run time.
    """

    experiment: str
    agent: str
    stage: dict[str, Any]
    chain: tuple[str, ...]
    budget: int
    objective: Literal["train", "simulated"] = "train"
    space: tuple[dict[str, Any], ...] = ()
    base_seed: int = 0
    n_workers: int = 1
    n_startup_trials: int = 10
    backbones: tuple[str, ...] = ("tiny",)
    data_hash: str = ""
    split_hash: str = ""
    train_defaults: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return study_name(self.experiment, self.agent, self.stage_config.name)

    @property
    def stage_config(self) -> StageConfig:
        return StageConfig.from_dict(self.stage, source=f"spec of {self.experiment}")

    @property
    def search_space(self) -> spaces.Space:
        return spaces.space_from_json(self.space)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, exactly as the database hands them back (tuples -> lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StudySpec:
        return from_mapping(cls, current_keys(data), source="study spec")


def current_keys(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored spec without the keys earlier versions wrote and this one has retired."""
    return {k: v for k, v in stored.items() if k not in _RETIRED_KEYS}


def identity(data: dict[str, Any]) -> dict[str, Any]:
    """What makes a study's results what they are: its spec (JSON, defaults filled in)
    without worker count, sampler start-up and budget (nor the stage keys sizing it, nor
    the number of models kept, nor how often a checkpoint is written)."""
    spec = StudySpec.from_json(data).to_json()
    stage = StageConfig.from_dict(spec["stage"], source="study spec").to_dict()
    spec["stage"] = {k: v for k, v in stage.items() if k not in _NOT_IDENTITY_STAGE}
    return {k: v for k, v in spec.items() if k not in _NOT_IDENTITY}


def spec_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The identity fields in which two specs differ (``stage.<key>`` for stage settings)."""
    a, b = identity(stored), identity(wanted)
    diff = [k for k in sorted(a) if k != "stage" and a[k] != b.get(k)]
    keys = sorted(set(a["stage"]) | set(b["stage"]))
    return diff + [f"stage.{k}" for k in keys if a["stage"].get(k) != b["stage"].get(k)]


@dataclass(frozen=True)
class CampaignOverrides:
    """Launcher-side changes to the stage plan and training defaults.

    ``trials``/``epochs``/``seeds`` replace every stage's value when set; ``train`` holds
    TrainConfig fields fixed for every trial (``device``, say); ``sim`` configures the
    simulated workload (``epoch_s``, ``seed``) when ``objective`` is "simulated".
    """

    objective: Literal["train", "simulated"] = "train"
    trials: int | None = None
    epochs: int | None = None
    seeds: int | None = None
    backbones: tuple[str, ...] = ("tiny",)
    base_seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Campaign:
    """``study_names``: the first study of each agent's chain (what workers get)."""

    study_names: tuple[str, ...]
    all_studies: tuple[str, ...]
    storage_url_masked: str
    changes: tuple[str, ...] = ()  # one line per study joined or extended
    seeded: tuple[str, ...] = ()  # one line per study given a warm start (--warm-start)


def _apply(stage: StageConfig, o: CampaignOverrides) -> StageConfig:
    changes: dict[str, Any] = {}
    if o.trials is not None and not stage.is_refit:
        changes.update(trials=o.trials, trials_per_agent={})
    if o.epochs is not None:
        patience = o.epochs if stage.is_refit else min(stage.patience, o.epochs)
        changes.update(epochs=o.epochs, patience=patience)
    if o.seeds is not None and stage.is_refit:
        changes["seeds"] = o.seeds
    return dataclasses.replace(stage, **changes)


def resolve_stages(stages: str | Sequence[str] | Sequence[StageConfig],
                   stages_file: Path | None = None) -> tuple[StageConfig, ...]:
    """A plan name, stage names (looked up in the stages file) or ready StageConfigs."""
    if isinstance(stages, str):
        return load_plan(stages, stages_file)
    if all(isinstance(s, StageConfig) for s in stages):
        return tuple(stages)  # type: ignore[arg-type]
    return load_stages([str(s) for s in stages], stages_file)


def _data_hashes(data_dir: Path, objective: str) -> tuple[str, str]:
    if objective != "train":
        return "", ""  # the simulated workload reads no data
    data = prepare_data(data_dir)
    return data.data_hash, data.split_hash


def create_campaign(storage_url: str, *, experiment: str, agents: Sequence[str],
                    stages: str | Sequence[str] | Sequence[StageConfig], n_workers: int,
                    overrides: CampaignOverrides | None = None, data_dir: Path = DEFAULT_DATA_DIR,
                    stages_file: Path | None = None,
                    settings: StorageSettings | None = None, seeder: Any = None) -> Campaign:
    """Create the schema and every study of every agent's chain, storing each spec; or
    join the studies that exist, raising their budgets when asked to.

    ``seeder`` (``launch hpo --warm-start``: :class:`psy_agents.hpo.warm.CampaignSeeder`)
    plans the new studies' first trials with ``seeder.plan(storage, new_specs)`` after every
    check and before the first write (it may refuse: nothing is created then), and queues
    them with ``seeder.apply(storage)`` (lines for :attr:`Campaign.seeded`) once they exist.

    Idempotent for the same arguments. A study that exists is *joined* when its identity
    (:func:`identity`) is the same: without ``overrides.trials`` (``seeds`` for a refit)
    its budget is kept, with a larger value it is raised. A chain asked for as a
    contiguous part of an existing chain (``--stage s1`` of an s0..refit campaign) joins
    that chain. Everything is checked before anything is written.

    Raises:
        ConfigError: a study exists with a different identity (the message names the
            fields), a budget would shrink, a bad stage plan or agent.
        StorageError: the storage cannot be reached.
        DataError: (objective "train") the data cannot be prepared.
    """
    o = overrides or CampaignOverrides()
    if "." in experiment or not experiment:
        raise ConfigError(f"experiment name {experiment!r} is empty or contains '.'",
                          "use letters, digits, '-' or '_'")
    plan = tuple(_apply(s, o) for s in resolve_stages(stages, stages_file))
    data_hash, split_hash = _data_hashes(Path(data_dir), o.objective)
    storage = create_schema_once(storage_url, settings)
    existing = {s.study_name: s.user_attrs.get(SPEC_ATTR) for s in storage.get_all_studies()}
    firsts, specs = [], []
    for agent in agents:
        chain = _joined_chain(tuple(study_name(experiment, agent, s.name) for s in plan),
                              existing)
        for stage in plan:
            # A parameter fixed by the launcher is not searched: sampling it would be ignored.
            space = tuple(p for p in spaces.agent_space(agent, o.backbones, stage.epochs,
                                                      sample_epochs=stage.sample_epochs)
                          if p.name not in o.train)
            specs.append(StudySpec(
                experiment=experiment, agent=agent, stage=stage.to_dict(), chain=chain,
                budget=stage.budget(agent), objective=o.objective,
                space=tuple(spaces.space_to_json(space)), base_seed=o.base_seed,
                n_workers=n_workers, n_startup_trials=max(n_workers, 10),
                backbones=tuple(o.backbones), data_hash=data_hash,
                split_hash=split_hash, train_defaults=dict(o.train),
                sim=dict(o.sim)))
        firsts.append(study_name(experiment, agent, plan[0].name))
    explicit = {False: o.trials is not None, True: o.seeds is not None}  # by is_refit
    wanted = [_reconcile(spec, existing.get(spec.name), explicit[spec.stage_config.is_refit])
              for spec in specs]  # every check before the first write
    if seeder is not None:
        seeder.plan(storage, [spec for spec in wanted if existing.get(spec.name) is None])
    changes = [line for spec in wanted if (line := _store(storage, spec, n_workers))]
    seeded = tuple(seeder.apply(storage)) if seeder is not None else ()
    return Campaign(tuple(firsts), tuple(s.name for s in specs), mask_url(storage_url),
                    tuple(changes), seeded)


def _joined_chain(chain: tuple[str, ...], existing: dict[str, Any]) -> tuple[str, ...]:
    """The stored chain of ``chain[0]``'s study when ``chain`` is a contiguous part of it
    (new workers join the whole chain), else ``chain``."""
    stored = existing.get(chain[0])
    if not stored:
        return chain
    full = tuple(stored.get("chain", ()))
    i = full.index(chain[0]) if chain[0] in full else -1
    return full if i >= 0 and full[i:i + len(chain)] == chain else chain


def _reconcile(spec: StudySpec, stored: dict[str, Any] | None, explicit: bool) -> StudySpec:
    """The spec to store for ``spec``'s study, given the ``stored`` one (None: new study).

    Raises:
        ConfigError: the identities differ, or an explicit budget is below the stored one.
    """
    if stored is None:
        return spec
    wanted = spec.to_json()
    diff = spec_differences(stored, wanted)
    if diff:
        raise ConfigError(f"study {spec.name} already exists with different settings "
                          f"(differs in: {', '.join(diff)})",
                          "these change its results: reuse the original settings, or pick a "
                          "new --experiment name (only --workers and a larger --trials may change)")
    old = StudySpec.from_json(stored)
    if not explicit or spec.budget == old.budget:
        return old
    if spec.budget < old.budget:
        flag = "--seeds" if spec.stage_config.is_refit else "--trials"
        raise ConfigError(f"{flag} {spec.budget} would lower the budget of study {spec.name} "
                          f"from {old.budget}: a budget can only grow",
                          f"pass {flag} {old.budget} or more, or leave {flag} out to keep it")
    return dataclasses.replace(old, stage=spec.stage, budget=spec.budget)


def _store(storage, spec: StudySpec, n_workers: int) -> str:
    """Create, join or extend ``spec``'s study and append to its budget history, under the
    study's budget lock (workers claim under it too). A line naming the change, or ""."""
    import optuna

    study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize",
                                load_if_exists=True)
    wanted = spec.to_json()
    with study_lock(study_storage(study), study_id(study), "budget"):
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is not None:  # another launcher may have created it since the check
            _reconcile(spec, stored, explicit=False)
        history = list(study.user_attrs.get(BUDGET_HISTORY_ATTR, []))
        old = None if stored is None else StudySpec.from_json(stored).budget
        budget = spec.budget if old is None else max(old, spec.budget)
        if old is None or budget > old:
            study.set_user_attr(SPEC_ATTR, wanted)
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        study.set_user_attr(BUDGET_HISTORY_ATTR,
                            [*history, {"budget": budget, "at": at, "workers": n_workers}])
    if old is None:
        return ""
    if budget > old:
        return f"{spec.name}: budget raised from {old} to {budget}"
    return f"{spec.name}: joined (budget {old})"


def load_spec(storage, name: str):
    """(study, spec) for ``name``.

    Raises:
        StorageError: no such study, or it was not created by ``launch`` (no spec).
    """
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise StorageError(f"no study named {name!r} in this storage",
                           "check --study (see `launch status`) or start it with `launch hpo`"
                           ) from None
    raw = study.user_attrs.get(SPEC_ATTR)
    if raw is None:
        raise StorageError(f"study {name!r} has no psy-agents spec",
                           "create it with `launch hpo`, not by hand")
    return study, StudySpec.from_json(raw)
