"""Campaign projection for ``launch plan``: pure arithmetic on measured figures.

For each agent: work = trials × epochs × seconds per epoch (one GPU, no pruning); with
pruning the epochs shrink by the measured epochs ratio, and N workers at the measured
scheduling efficiency share it: wall = work × ratio / (N × efficiency), but never less
than one full trial (the longest trial is not split across workers). With ``--agent all``
the four chains share one pool, so the campaign's wall time is the sum of the agents'.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psy_agents.errors import ConfigError


@dataclass(frozen=True)
class Figure:
    """A number and where it came from ("measured: FILE", "flag", "assumed")."""

    value: float
    source: str


@dataclass(frozen=True)
class AgentPlan:
    agent: str
    trials: int
    epochs: int
    epoch_s: float
    single_gpu_s: float
    campaign_s: float


def project(agent: str, *, trials: int, epochs: int, epoch_s: float, workers: int,
            pruning_ratio: float, efficiency: float) -> AgentPlan:
    """One agent's projection (see the module docstring).

    Raises:
        ValueError: a non-positive figure, or a ratio/efficiency outside (0, 1].
    """
    for name, value in (("trials", trials), ("epochs", epochs), ("epoch_s", epoch_s),
                        ("workers", workers)):
        if value <= 0:
            raise ValueError(f"The value of `{name}` is {value}, but must be > 0")
    for name, value in (("pruning_ratio", pruning_ratio), ("efficiency", efficiency)):
        if not 0 < value <= 1:
            raise ValueError(f"The value of `{name}` is {value}, but must be in (0, 1]")
    single = trials * epochs * epoch_s
    pooled = max(single * pruning_ratio / (workers * efficiency), epochs * epoch_s)
    return AgentPlan(agent, trials, epochs, epoch_s, single, pooled)


def parse_epoch_seconds(text: str) -> dict[str, float]:
    """``criteria=12.5,evidence=20`` -> {"criteria": 12.5, "evidence": 20.0}.

    Raises:
        ConfigError: an item is not ``agent=seconds`` with seconds > 0.
    """
    out: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        agent, sep, raw = item.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not sep or not agent.strip() or value <= 0:
            raise ConfigError(f"--epoch-seconds item {item!r} is not AGENT=SECONDS with "
                              "SECONDS > 0", "write e.g. --epoch-seconds criteria=12.5,"
                              "evidence=20")
        out[agent.strip()] = value
    return out


def read_bench_files(paths: Sequence[Path]) -> dict[str, Any]:
    """Figures from ``launch bench ... --out`` files: epoch seconds per agent (bench train),
    efficiency (bench storage), pruning epochs ratio (bench pruning), each a :class:`Figure`.

    Raises:
        ConfigError: a file is missing, not JSON, or not a bench output.
    """
    epoch_s: dict[str, Figure] = {}
    found: dict[str, Any] = {"epoch_s": epoch_s}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            kind = data["kind"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a `launch bench ... --out` file ({exc})",
                              "pass files written by bench train/storage/pruning --out") from None
        source = f"measured: {path}"
        if kind == "bench train":
            epoch_s[data["agent"]] = Figure(float(data["epoch_s"]), source)
        elif kind == "bench storage":
            found["efficiency"] = Figure(float(data["efficiency"]), source)
        elif kind == "bench pruning":
            found["pruning_ratio"] = Figure(float(data["epochs_ratio"]), source)
        else:
            raise ConfigError(f"{path}: unknown bench kind {kind!r}",
                              "pass files of bench train, bench storage or bench pruning")
    return found


def missing_agents(agents: Sequence[str], epoch_s: Mapping[str, Figure]) -> list[str]:
    return [a for a in agents if a not in epoch_s]


def fmt_duration(seconds: float) -> str:
    """Human units: minutes under 2 h, hours under 3 days, days beyond."""
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
