"""Config plumbing shared by every command: frozen dataclasses built from untrusted mappings.

Resolution order, applied once at the CLI edge: flag > environment variable > profile file >
default. Click resolves flag > env var (each option's ``envvar``); the profile and default
steps are :func:`psy_agents.backends.registry.load_options`, which builds the dataclass with
the helpers here. They turn a mapping (a params.json, a TOML profile, a study's user attrs)
into a frozen dataclass and reject unknown keys and wrong types with one clear line.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from psy_agents.errors import ConfigError

T = TypeVar("T")


def _type_ok(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        # JSON and TOML write 1e-3 and 1 alike; an int is a fine float, a bool is not.
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        args = get_args(tp)
        if not isinstance(value, list | tuple):
            return False
        inner = args[0] if args else Any
        return all(_type_ok(v, inner) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str) -> T:
    """Build the frozen dataclass ``cls`` from ``data``, validating keys and types.

    Fields missing from ``data`` keep their defaults. Lists become tuples for tuple fields.

    Raises:
        ConfigError: on an unknown key (the message lists the valid keys), a value of the
            wrong type (the message names the field, the value and the expected type) or
            one the dataclass rejects.
    """
    kwargs = checked_fields(cls, data, source=source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}", "fix the value named above") from exc


def checked_fields(cls: type, data: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """``data`` with its keys and value types checked against the dataclass ``cls`` (and
    lists turned into tuples, ints into floats where the field wants them); the
    dataclass's own value checks are not run. Raises ConfigError like :func:`from_mapping`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a table of keys, got {type(data).__name__}",
                          "write it as key = value pairs")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}",
            f"valid keys are: {', '.join(sorted(fields))}",
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        tp = hints[key]
        if not _type_ok(value, tp):
            raise ConfigError(
                f"{source}: the value of {key!r} is {value!r}, but must be {_describe(tp)}",
                f"fix {key!r} in {source}",
            )
        if get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        if tp is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    return kwargs


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into one ``ConfigError`` line."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", "check the path") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})", "fix the syntax at that line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})", "check the file and its permissions") from None

