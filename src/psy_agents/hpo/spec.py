"""Study specs and campaigns: everything a worker needs, stored in the database.

A study is one (experiment, agent, stage), named ``{experiment}.{agent}.{stage}``. The
launcher creates the schema and *every* study of every agent's chain once
(:func:`create_campaign`) and stores a :class:`StudySpec` as JSON in each study's user
attrs; a worker needs only the storage URL, a study name, its index, and where data and
checkpoints live on its own machine (its command line says; see ``Backend.worker_paths``).
A spec holds only what is the same on every machine (plan, space, data and split hashes),
never a path.
"""

from __future__ import annotations

import dataclasses
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
from psy_agents.hpo.stages import StageConfig, load_plan, load_stages
from psy_agents.hpo.storage_url import mask_url
from psy_agents.settings import DEFAULT_DATA_DIR

SPEC_ATTR = "psy_spec"
# Keys that specs written by earlier versions held (launcher paths); dropped when read.
_RETIRED_KEYS = ("data_dir", "runs_dir")
NARROWED_ATTR = "psy_narrowed_space"


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
                    settings: StorageSettings | None = None) -> Campaign:
    """Create the schema and every study of every agent's chain, storing each spec.

    Idempotent: rerunning with the same arguments loads the existing studies.

    Raises:
        ConfigError: a study exists with a different spec (the message names the fields),
            a bad stage plan or agent.
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
    firsts, every = [], []
    for agent in agents:
        chain = tuple(study_name(experiment, agent, s.name) for s in plan)
        for stage in plan:
            # A parameter fixed by the launcher is not searched: sampling it would be ignored.
            space = tuple(p for p in spaces.agent_space(agent, o.backbones, stage.epochs)
                          if p.name not in o.train)
            spec = StudySpec(
                experiment=experiment, agent=agent, stage=stage.to_dict(), chain=chain,
                budget=stage.budget(agent), objective=o.objective,
                space=tuple(spaces.space_to_json(space)), base_seed=o.base_seed,
                n_workers=n_workers, n_startup_trials=max(n_workers, 10),
                backbones=tuple(o.backbones), data_hash=data_hash,
                split_hash=split_hash, train_defaults=dict(o.train),
                sim=dict(o.sim))
            _create_or_check(storage, spec)
            every.append(spec.name)
        firsts.append(chain[0])
    return Campaign(tuple(firsts), tuple(every), mask_url(storage_url))


def _create_or_check(storage, spec: StudySpec) -> None:
    import optuna

    study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize",
                                load_if_exists=True)
    wanted = spec.to_json()
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, wanted)
        return
    stored = current_keys(stored)
    if stored != wanted:
        diff = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise ConfigError(f"study {spec.name} already exists with a different spec "
                          f"(differs in: {', '.join(diff)})",
                          "reuse the original settings or pick a new --experiment name")


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
