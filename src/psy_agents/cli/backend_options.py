"""``@backend_options``: the ``--backend`` choice and every prefixed backend flag, for any command.

Each field of a backend's options dataclass becomes ``--<backend>-<field>`` (underscores as
dashes) with env var ``PSY_<BACKEND>_<FIELD>``; tuple fields repeat the flag, dict fields take
``KEY=VALUE``; tolerations are profile-only. The decorated command receives
``backend: str`` and ``backend_options`` (the resolved frozen dataclass: flag > env var >
profile > default). A prefixed flag of a backend that is not selected is a usage error.

Usage::

    @click.command()
    @backend_options
    def hpo(backend: str, backend_options, ...): ...
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

import click
from click.core import ParameterSource

from psy_agents.backends.options import PROFILE_DIR
from psy_agents.backends.registry import REGISTRY, load_options

# Where the default profiles ``<backend>.toml`` live: ``$PSY_LAUNCH_DIR``, else ./launch.
PROFILE_DIR_ENV = "PSY_LAUNCH_DIR"


def profile_dir() -> Path:
    """The folder of the default backend profiles (env ``PSY_LAUNCH_DIR``, else ./launch)."""
    return Path(os.environ.get(PROFILE_DIR_ENV) or PROFILE_DIR)

_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _base_type(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    args = [a for a in get_args(tp) if a is not type(None)]
    return args[0] if get_origin(tp) in (typing.Union, types.UnionType) else tp


def _key_values(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _flag_for(backend: str, fld: dataclasses.Field, tp: Any):
    """(click option, converter) for one field, or None for profile-only fields."""
    tp = _base_type(tp)
    flag = f"--{backend}-{fld.name.replace('_', '-')}"
    env = f"PSY_{backend.upper()}_{fld.name.upper()}"
    help_ = f"{backend} backend: `{fld.name}` [env: {env}; default from launch/{backend}.toml]."
    origin = get_origin(tp)
    if origin is tuple and get_args(tp)[0] is str:
        return click.option(flag, multiple=True, envvar=env, help=help_), tuple
    if origin is dict:
        return (click.option(flag, multiple=True, envvar=env, metavar="KEY=VALUE", help=help_),
                _key_values)
    if tp in (str, int, float):
        return click.option(flag, type=tp, default=None, envvar=env, help=help_), tp
    return None


def _table() -> list[tuple[str, str, str, Any, Callable]]:
    """(param name, backend, field, click option, converter) for every flag-able field."""
    rows = []
    for backend, backend_cls in REGISTRY.items():
        cls = backend_cls.options_cls
        hints = typing.get_type_hints(cls)
        for fld in dataclasses.fields(cls):
            made = _flag_for(backend, fld, hints[fld.name])
            if made is not None:
                rows.append((f"{backend}_{fld.name}", backend, fld.name, *made))
    return rows


def backend_options(f: Callable) -> Callable:
    """Decorate a click command with ``--backend``, ``--profile`` (alias ``--backend-profile``)
    and the prefixed flags."""
    rows = _table()

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        backend = kwargs["backend"]
        profile = kwargs.pop("backend_profile")
        overrides: dict[str, Any] = {}
        for param, owner, field_name, _, convert in rows:
            value = kwargs.pop(param)
            source = ctx.get_parameter_source(param)
            if source not in _GIVEN:
                continue
            if owner != backend:
                if source is ParameterSource.COMMANDLINE:
                    flag = f"--{param.replace('_', '-')}"
                    raise click.UsageError(
                        f"{flag} is a {owner} option, but --backend is {backend}; "
                        f"drop it or pass --backend {owner}")
                continue  # an env var meant for another backend is simply not ours
            overrides[field_name] = convert(value)
        kwargs["backend_options"] = load_options(
            backend, profile=Path(profile) if profile else None, overrides=overrides,
            profile_dir=profile_dir())
        return f(*args, **kwargs)

    for _, _, _, option, _ in reversed(rows):
        wrapper = option(wrapper)
    wrapper = click.option(
        "--profile", "--backend-profile", "backend_profile", type=click.Path(dir_okay=False),
        default=None, envvar="PSY_BACKEND_PROFILE",
        help="Profile TOML of the selected backend, e.g. launch/<name>.toml "
             "[env: PSY_BACKEND_PROFILE; default: launch/<backend>.toml].")(wrapper)
    return click.option(
        "--backend", type=click.Choice(sorted(REGISTRY)), default="local", show_default=True,
        envvar="PSY_BACKEND", help="Where workers run [env: PSY_BACKEND].")(wrapper)
