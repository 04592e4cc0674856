"""What `launch hpo` checks: its input before anything is created, its outcome at the end.

Before: the ``--fix`` values in full (keys, types and ranges), the data folder (it must load,
read only), a storage the backend's workers can reach, one device per worker. A dry run
checks the same, except the storage, which it never contacts. After (local backend, or
``--follow``): a worker that failed for good, or a stage that ended without one COMPLETE
trial, makes the launcher exit 1 naming what to read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from psy_agents.config import checked_fields
from psy_agents.data.validate import load_dataset
from psy_agents.errors import ConfigError, DataError, RunFailed
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.results import all_status
from psy_agents.hpo.storage_url import sqlite_path
from psy_agents.training.config import TrainConfig


def refuse_local_storage(backend: str, url: str) -> None:
    """Kubernetes workers read the storage URL from the Secret, on other machines: a SQLite
    file of the launcher's machine cannot be the database they use.

    Raises:
        ConfigError: ``--backend k8s`` with a SQLite storage.
    """
    if backend == "k8s" and sqlite_path(url) is not None:
        raise ConfigError(
            f"--backend k8s with the SQLite storage {url}: the pods cannot reach a file on "
            "this machine, and they read the URL from the Secret",
            "pass --storage (or PSY_STORAGE) with the PostgreSQL URL the Secret holds")


def one_device(gpus_per_worker: int) -> int:
    """``gpus_per_worker`` if a worker can use all of it (0 or 1).

    Raises:
        ConfigError: more than one GPU per worker: a trial trains on one device, so the
            others would sit idle for the whole campaign.
    """
    if gpus_per_worker > 1:
        raise ConfigError(
            f"--gpus-per-worker {gpus_per_worker}: a trial trains on one GPU, so "
            f"{gpus_per_worker - 1} of each worker's GPUs would sit idle",
            f"use --gpus-per-worker 1 and {gpus_per_worker}x the --workers (each worker "
            "takes its own GPU)")
    return gpus_per_worker


def parse_fixed(items: tuple[str, ...]) -> dict[str, Any]:
    """``("max_length=256", ...)`` -> ``{"max_length": 256}``, checked against TrainConfig:
    keys, types and each value's range, alone and together (a rule between a fixed and a
    sampled setting, such as stride < max_length / 2, is judged against the other's
    default when only that one is fixed: ``--fix stride=200`` is refused, fix
    ``max_length`` too to allow it).

    Raises:
        ConfigError: an item without ``=``, an unknown key, a value of the wrong type or
            out of range.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--fix {item!r} is not KEY=VALUE", "write it as --fix max_length=256")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw  # a bare word: pooling=mean
    checked = checked_fields(TrainConfig, out, source="--fix")
    for key, value in checked.items():  # each value's own range, before any trial runs
        _judge({key: value})
    _judge(checked)  # rules between two fixed settings
    return checked


def _judge(fixed: dict[str, Any]) -> None:
    """Refuse ``fixed`` when TrainConfig (defaults for the rest) rejects one of its own
    keys. A rule broken by a setting that is not fixed is not judged here: that setting is
    sampled, and each trial checks it beside the sampled values."""
    try:
        TrainConfig.from_dict(fixed, source="--fix")
    except ConfigError as exc:
        named = re.search(r"`(\w+)`", exc.problem)
        if named and named.group(1) in fixed:
            raise ConfigError(exc.problem, "give that --fix a value in the range named"
                              ) from None


def check_data(data_dir: Path, objective: str) -> None:
    """The training data loads from ``data_dir`` (read only: no splits file is written).
    The simulated objective reads no data.

    Raises:
        DataError: a missing folder, missing or malformed CSV files.
    """
    if objective != "train":
        return
    if not Path(data_dir).is_dir():
        raise DataError(f"data folder {data_dir} does not exist",
                        "pass --data-dir (or PSY_DATA_DIR) with the ReDSM5 CSV files")
    load_dataset(Path(data_dir))


def check_outcome(storage_url: str, experiment: str, handle) -> None:
    """Raise when the search that ``handle`` ran did not succeed.

    Raises:
        RunFailed: a worker the backend recorded as failed for good (the message names its
            log), or a study whose budget ended without one COMPLETE trial.
    """
    workers = handle.data.get("workers", [])
    failed = [w for w in workers if w.get("state") == "failed"]
    if failed:
        codes = ", ".join(f"worker {w['index']}: exit {(w.get('exit_codes') or ['?'])[-1]}"
                          for w in failed)
        raise RunFailed(f"{len(failed)} of {len(workers)} {handle.backend} worker(s) of "
                        f"{experiment} failed ({codes})",
                        f"read {failed[0].get('log', 'its log')}; fix the cause and run the "
                        "same `launch hpo` command again to resume")
    rows = all_status(open_storage(storage_url), experiment)
    empty = [r for r in rows if r.ended and r.counts["COMPLETE"] == 0]
    if empty:
        r = empty[0]
        raise RunFailed(f"study {r.name} ended without a COMPLETE trial "
                        f"({r.counts['PRUNED']} pruned, {r.counts['FAIL']} failed)",
                        "each trial's fail_reason or note is in `launch export --study "
                        f"{r.name} --out DIR`; loosen the pruner or the settings and relaunch "
                        "with a new --experiment")
