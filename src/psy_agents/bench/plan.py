"""Campaign projection for ``launch plan``: pure arithmetic on measured figures.

For each agent: work = trials × epochs × seconds per epoch (one GPU, no pruning); N workers
at the scheduling efficiency share it: wall = work / (N × efficiency); pruning shrinks the
epochs by the epochs ratio: wall = work × ratio / (N × efficiency); neither is ever less
than one full trial (the longest trial is not split across workers). With ``--agent all``
the four chains share one pool, so the campaign's wall time is the sum of the agents'.

The two factors are kept apart (:class:`SpeedUp`): the workers' speed-up and the pruning's,
each with its source. The headline counts the pruning only when its ratio was measured (or
given by the user), never when it is the assumed goal, which no search has shown yet.

Peak disk, beside it (:func:`project_disk`), is an estimate from parameter counts: a resume
checkpoint holds ~12 bytes per parameter (fp32 weights + AdamW's two fp32 moments; twice
that while the next epoch's is written beside it) and a saved model ~4 (fp32 weights, no
optimizer state); heads, tokenizers and scheduler state are left out. Each running trial
holds one checkpoint and its staged best-epoch model; each study keeps ``keep_models`` models
(a refit: one per seed). Parameters are counted from a backbone's ``*.safetensors`` headers
(exact) where there is a local folder, and computed from the tiny model's shape for ``tiny``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psy_agents.agents.backbones import TINY_SHAPE, resolve_backbone
from psy_agents.agents.registry import get_agent
from psy_agents.errors import ConfigError, ModelError

CHECKPOINT_BYTES_PER_PARAM = 12  # fp32 weights + AdamW's exp_avg and exp_avg_sq (fp32)
MODEL_BYTES_PER_PARAM = 4  # fp32 weights only
TINY_VOCAB = 3000  # the tiny model's WordPiece vocabulary size, at most
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


@dataclass(frozen=True)
class Figure:
    """A number and where it came from ("measured: FILE", "flag", "ASSUMED ..."); ``assumed``
    marks a default that nothing measured or gave."""

    value: float
    source: str
    assumed: bool = False


@dataclass(frozen=True)
class AgentPlan:
    """One agent's wall times: one GPU without pruning, the workers without pruning, and
    the workers with pruning."""

    agent: str
    trials: int
    epochs: int
    epoch_s: float
    single_gpu_s: float
    workers_s: float
    pruned_s: float


@dataclass(frozen=True)
class SpeedUp:
    """A campaign's wall times and its two speed-up factors, apart.

    ``workers`` = one GPU / the workers without pruning; ``pruning`` = the workers without
    pruning / with it. ``campaign_s`` (and ``headline``, one GPU / it) counts the pruning
    only if ``pruning_counted``.
    """

    single_gpu_s: float
    workers_s: float
    pruned_s: float
    pruning_counted: bool

    @property
    def workers(self) -> float:
        return self.single_gpu_s / self.workers_s

    @property
    def pruning(self) -> float:
        return self.workers_s / self.pruned_s

    @property
    def campaign_s(self) -> float:
        return self.pruned_s if self.pruning_counted else self.workers_s

    @property
    def headline(self) -> float:
        return self.single_gpu_s / self.campaign_s


def speed_up(rows: Sequence[AgentPlan], pruning_ratio: Figure) -> SpeedUp:
    """The campaign's totals over ``rows``; the pruning counts unless its ratio is assumed."""
    return SpeedUp(sum(r.single_gpu_s for r in rows), sum(r.workers_s for r in rows),
                   sum(r.pruned_s for r in rows), not pruning_ratio.assumed)


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
    pooled = single / (workers * efficiency)
    one_trial = epochs * epoch_s
    return AgentPlan(agent, trials, epochs, epoch_s, single, max(pooled, one_trial),
                     max(pooled * pruning_ratio, one_trial))


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
        ConfigError: a file is missing, not JSON, not a bench output, or lacks its figure.
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
        if kind not in ("bench train", "bench storage", "bench pruning"):
            raise ConfigError(f"{path}: unknown bench kind {kind!r}",
                              "pass files of bench train, bench storage or bench pruning")
        source = f"measured: {path}"
        try:
            if kind == "bench train":
                epoch_s[data["agent"]] = Figure(float(data["epoch_s"]), source)
            elif kind == "bench storage":
                found["efficiency"] = Figure(float(data["efficiency"]), source)
            else:
                found["pruning_ratio"] = pruning_figure(data, source)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: a {kind} file without its figure ({exc!r})",
                              f"write it again with `launch {kind} --out`") from None
    return found


def pruning_figure(data: Mapping[str, Any], source: str) -> Figure:
    """The epochs ratio of a ``bench pruning --out`` file: the mean over its seeds
    (``summary.epochs_ratio.mean``; its spread, seed count and mean regret go into the
    source), or one run's ``epochs_ratio`` (a file written before ``--seeds``).

    Raises:
        KeyError, TypeError, ValueError: the file holds the ratio in neither form.
    """
    summary = data.get("summary")
    if summary is None:
        return Figure(float(data["epochs_ratio"]), source)
    ratio = summary["epochs_ratio"]
    detail = f"mean of {len(data['seeds'])} seeds, std {float(ratio['std']):.3f}"
    if "regret" in summary:
        detail += f", regret {100 * float(summary['regret']['mean']):+.2f}%"
    return Figure(float(ratio["mean"]), f"{source}, {detail}")


def missing_agents(agents: Sequence[str], epoch_s: Mapping[str, Figure]) -> list[str]:
    return [a for a in agents if a not in epoch_s]


def fmt_duration(seconds: float) -> str:
    """Human units: minutes under 2 h, hours under 3 days, days beyond."""
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@dataclass(frozen=True)
class DiskPlan:
    """Peak disk of a campaign in bytes (estimates; see the module docstring)."""

    running_trials: int
    trial_bytes: float  # one running trial: checkpoint x 2 (while rewritten) + staged model
    models_per_study: int
    kept_bytes: float  # every study's kept models
    peak_bytes: float


def count_params(name: str) -> Figure:
    """Parameter count of backbone ``name`` ("tiny", "minilm" or a local model folder).

    Raises:
        ConfigError: a hub name or a folder without ``*.safetensors`` (nothing to count).
    """
    if name == "tiny":
        return Figure(float(tiny_params()),
                      f"estimate: tiny BERT shape, vocabulary <= {TINY_VOCAB}")
    try:
        files = sorted(Path(resolve_backbone(name)).glob("*.safetensors"))
    except ModelError:
        files = []
    if not files:
        raise ConfigError(f"cannot count the parameters of backbone {name!r} (no local "
                          "*.safetensors)", "give --backbone tiny, minilm or a local model folder")
    total = 0
    for path in files:
        with open(path, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        total += sum(math.prod(t["shape"]) for key, t in header.items()
                     if key != "__metadata__" and t["dtype"] in _FLOAT_DTYPES)
    return Figure(float(total), f"counted: {', '.join(str(p) for p in files)}")


def tiny_params(vocab: int = TINY_VOCAB) -> int:
    """Parameters of the tiny BERT (:data:`TINY_SHAPE`, pooler included) with ``vocab``
    WordPiece tokens: embeddings, then per layer attention, its norm, the feed-forward
    block and its norm."""
    h, n, i = (TINY_SHAPE[k] for k in ("hidden_size", "num_hidden_layers", "intermediate_size"))
    embeddings = (vocab + TINY_SHAPE["max_position_embeddings"] + 2) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    return embeddings + n * layer + h * h + h


def agent_params(agent: str, backbone_params: float) -> float:
    """Parameters of ``agent``'s model: one encoder, two for a fused (joint) agent."""
    return backbone_params * (2 if get_agent(agent).fuse else 1)


def project_disk(params: Mapping[str, float], *, workers: int, trials: int,
                 models_per_study: int) -> DiskPlan:
    """Peak disk of a campaign whose agents (``params``: agent -> parameter count) run
    ``trials`` trials on ``workers`` workers, each study keeping ``models_per_study``.

    Running trials: min(workers, trials), each the largest agent's checkpoint (twice, while
    rewritten) and staged model. Kept: ``models_per_study`` models of every agent's study.
    """
    running = min(workers, trials)
    trial = max(params.values()) * (2 * CHECKPOINT_BYTES_PER_PARAM + MODEL_BYTES_PER_PARAM)
    kept = sum(models_per_study * p * MODEL_BYTES_PER_PARAM for p in params.values())
    return DiskPlan(running, trial, models_per_study, kept, running * trial + kept)


def fmt_bytes(n: float) -> str:
    """Decimal units: MB under 1 GB, GB under 1 TB, TB beyond."""
    for unit, size in (("TB", 1e12), ("GB", 1e9)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e6:.0f} MB"
