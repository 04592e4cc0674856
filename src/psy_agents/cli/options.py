"""The options every command shares, each declared once: flag, environment variable,
default and help.

Usage::

    @click.command()
    @shared_options("storage", "experiment", "runs_dir")
    def status(settings: Settings, ...): ...

The decorated command receives one frozen :class:`psy_agents.settings.Settings` built from
the options it declares (flag > environment variable > default); options it does not declare
keep the Settings defaults. This is the only place a ``PSY_*`` setting is read from the
environment (click reads each option's ``envvar``); ``launch worker`` reads the same options
from the command line and environment its backend gives it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from psy_agents.hpo.storage_url import check_storage_url
from psy_agents.settings import (
    DEFAULT_DATA_DIR,
    DEFAULT_EXPERIMENT,
    DEFAULT_RUNS_DIR,
    DEFAULT_STORAGE,
    STORAGE_ENV,
    Settings,
)

# name -> (flags, click.option keyword arguments). The environment variable is named in the
# help, because click shows `envvar` only with show_envvar, which our help style replaces.
_DECLARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "storage": (("--storage",), {
        "envvar": STORAGE_ENV, "default": None, "metavar": "URL",
        "help": f"Optuna storage URL, e.g. postgresql+psycopg2://user:pass@host:5432/db "
                f"[env: {STORAGE_ENV}; default: {DEFAULT_STORAGE}]. "
                "Printed only with the password masked."}),
    "experiment": (("--experiment",), {
        "envvar": "PSY_EXPERIMENT", "default": DEFAULT_EXPERIMENT, "show_default": True,
        "help": "Experiment name; its studies are `{experiment}.{agent}.{stage}` "
                "[env: PSY_EXPERIMENT]."}),
    "runs_dir": (("--runs-dir",), {
        "envvar": "PSY_RUNS_DIR", "type": click.Path(file_okay=False, path_type=Path),
        "default": DEFAULT_RUNS_DIR, "show_default": True,
        "help": "Root of logs, checkpoints, worker handles (<runs-dir>/<experiment>) and "
                "outputs [env: PSY_RUNS_DIR]."}),
    "data_dir": (("--data-dir",), {
        "envvar": "PSY_DATA_DIR", "type": click.Path(file_okay=False, path_type=Path),
        "default": DEFAULT_DATA_DIR, "show_default": True,
        "help": "Folder with redsm5_posts.csv and redsm5_annotations.csv "
                "[env: PSY_DATA_DIR]."}),
    "stages_file": (("--stages-file",), {
        "envvar": "PSY_STAGES", "type": click.Path(dir_okay=False, path_type=Path),
        "default": None,
        "help": "Stage plans [env: PSY_STAGES; default: launch/stages.toml, else the "
                "packaged copy]."}),
    "cache_dir": (("--cache-dir",), {
        "envvar": "PSY_CACHE_DIR", "type": click.Path(file_okay=False, path_type=Path),
        "default": None,
        "help": "Built tiny models and tokenized features [env: PSY_CACHE_DIR; default: "
                "<runs-dir>/cache]."}),
    "tracking_uri": (("--mlflow-uri", "tracking_uri"), {
        "envvar": "MLFLOW_TRACKING_URI", "default": None, "metavar": "URI",
        "help": "MLflow tracking URI; nothing is tracked without one "
                "[env: MLFLOW_TRACKING_URI]."}),
}
SHARED = tuple(_DECLARED)
# `launch bench ...` keeps its runs apart from real campaigns by default.
BENCH_RUNS = {"runs_dir": {"default": DEFAULT_RUNS_DIR / "bench"}}


def shared_option(name: str, **changes: Any) -> Callable[[Callable], Callable]:
    """The click option ``name`` (one of :data:`SHARED`) as declared above; ``changes``
    adjust it for one command (``required=True``, say) without restating the rest."""
    flags, kwargs = _DECLARED[name]
    return click.option(*flags, **{**kwargs, **changes})


def build_settings(**given: Any) -> Settings:
    """A :class:`Settings` from option values (None or absent: the default).

    Raises:
        StorageError: a given storage URL is unusable (see
            :func:`psy_agents.hpo.storage_url.check_storage_url`): every command that takes
            ``--storage`` is refused here, before it opens or creates anything.
    """
    values = {k: v for k, v in given.items() if v is not None}
    if "storage" in given:
        values["storage"] = check_storage_url(values.get("storage", DEFAULT_STORAGE))
    values.setdefault("storage", DEFAULT_STORAGE)
    return Settings(**values)


def shared_options(*names: str, **changes: dict[str, Any]) -> Callable[[Callable], Callable]:
    """Add the shared options ``names`` to a command and hand it ``settings: Settings``.

    ``changes`` maps an option name to click keyword changes for this command, e.g.
    ``experiment={"required": True}``.
    """
    unknown = sorted(set(names) - set(_DECLARED))
    if unknown:
        raise ValueError(f"unknown shared option {unknown[0]!r}; valid: {', '.join(SHARED)}")

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["settings"] = build_settings(**{n: kwargs.pop(n) for n in names})
            return f(*args, **kwargs)

        for name in reversed(names):
            wrapper = shared_option(name, **changes.get(name, {}))(wrapper)
        return wrapper
    return decorate
