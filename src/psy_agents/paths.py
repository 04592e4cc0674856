"""Where a campaign's files live below a runs folder: one function per kind of file.

Every path here is relative to the ``runs_dir`` of the process that asks (the launcher's
for handles and logs, the worker's for checkpoints and refit outputs); none is a path of
another machine.
"""

from __future__ import annotations

from pathlib import Path


def experiment_dir(runs_dir: Path, experiment: str) -> Path:
    """``<runs_dir>/<experiment>``: logs, the backend handle, checkpoints, kept models,
    refit outputs."""
    return Path(runs_dir) / experiment


def checkpoint_dir(runs_dir: Path, experiment: str, study: str, original: int) -> Path:
    """The resume checkpoint of trial ``original`` of ``study`` and of every retry of it
    (a retry keeps its original's number, so it resumes where the original stopped)."""
    return experiment_dir(runs_dir, experiment) / "checkpoints" / study / f"trial-{original}"


def models_dir(runs_dir: Path, experiment: str, study: str) -> Path:
    """The kept best-epoch models of ``study``'s top-k COMPLETE trials, one ``trial-<n>/``
    folder each (:func:`model_dir`)."""
    return experiment_dir(runs_dir, experiment) / "models" / study


def model_dir(runs_dir: Path, experiment: str, study: str, number: int) -> Path:
    """The kept model of trial ``number`` of ``study`` (a ``launch eval --model`` folder)."""
    return models_dir(runs_dir, experiment, study) / f"trial-{number}"


def refit_dir(runs_dir: Path, experiment: str, agent: str) -> Path:
    """The refit outputs of ``agent``: ``metrics.json``, ``config.json``, ``seed-<k>/``."""
    return experiment_dir(runs_dir, experiment) / "refit" / agent
