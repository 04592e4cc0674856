"""``run_training``: one configuration, trained and evaluated (one HPO trial, or `launch train`).

Prepares the run (backbone, windows, model, optimizer, schedule), resumes from a checkpoint
if one is there, hands the epochs to :func:`psy_agents.training.loop.fit`, and writes the
outputs. Epochs are 0-based.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psy_agents.agents.backbones import load_tokenizer, resolve_backbone
from psy_agents.agents.registry import get_agent
from psy_agents.data.features import build_windows
from psy_agents.errors import ConfigError, Preempted
from psy_agents.lazy import lazy_import
from psy_agents.training import checkpoint as ckpt
from psy_agents.training.batching import plan_epoch
from psy_agents.training.config import TrainConfig
from psy_agents.training.loop import Run, State, fit

torch = lazy_import("torch")

__all__ = ["EpochRecord", "Preempted", "TrainResult", "run_training", "prepare"]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    value: float
    metrics: dict[str, float]
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    best_value: float
    best_epoch: int
    epochs_run: int  # epochs computed in this call
    history: tuple[EpochRecord, ...]  # all epochs, including those restored from a checkpoint
    metrics: dict[str, float]  # eval-split metrics at the best epoch
    stopped: str  # "completed" | "early_stopped" | "pruned"
    resumed_from_epoch: int | None


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for, but CUDA is not available",
                          "use device 'auto' or 'cpu'")
    return name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def allowed_windows(pairs: tuple[Any, ...], pair_index: np.ndarray, fraction: float,
                    seed: int) -> np.ndarray:
    """Windows of a seeded ``fraction`` of the posts (whole posts, never parts of one)."""
    if fraction >= 1.0:
        return np.ones(len(pair_index), dtype=bool)
    posts = sorted({p.post_id for p in pairs})
    keep_n = max(1, math.ceil(fraction * len(posts)))
    keep = {posts[i] for i in np.random.default_rng([seed, 7]).permutation(len(posts))[:keep_n]}
    return np.array([pairs[i].post_id in keep for i in pair_index], dtype=bool)


def optimizer_kwargs(device: str) -> dict[str, Any]:
    """AdamW's implementation on ``device``: ``fused`` on CUDA (one kernel for every
    parameter instead of a few per tensor, and no host read of the step count), torch's
    default elsewhere (no fused CPU kernel is faster on the CPUs this runs on)."""
    return {"fused": True} if str(device).startswith("cuda") else {}


def matmul_precision(device: str) -> str | None:
    """The fp32 matmul precision to set for ``device``: ``"high"`` (TF32 tensor cores, a
    10-bit mantissa for the products, fp32 accumulation) on CUDA; None (leave torch's
    ``"highest"``) elsewhere. Under bf16 autocast it only touches the ops kept in fp32."""
    return "high" if str(device).startswith("cuda") else None


def make_optimizer(cfg: TrainConfig, model: Any, device: str = "cpu") -> torch.optim.Optimizer:
    """AdamW or SGD (momentum 0.9); heads at ``lr * head_lr_multiplier``; no decay on
    biases and norms; AdamW as :func:`optimizer_kwargs` picks for ``device``."""
    head_ids = {id(p) for p in model.head_parameters()}
    groups: dict[tuple[bool, bool], list[Any]] = {}
    for name, p in model.named_parameters():
        no_decay = p.ndim < 2 or "norm" in name.lower()
        groups.setdefault((id(p) in head_ids, no_decay), []).append(p)
    params = [{"params": ps, "lr": cfg.lr * (cfg.head_lr_multiplier if head else 1.0),
               "weight_decay": 0.0 if no_decay else cfg.weight_decay}
              for (head, no_decay), ps in sorted(groups.items())]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    return torch.optim.AdamW(params, lr=cfg.lr, **optimizer_kwargs(device))


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step ``step``: linear warmup, then decay."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return max(0.0, 1 - progress)


def compile_encoders(model: Any, backend: str = "inductor") -> None:
    """Compile each encoder's forward in place with ``torch.compile`` (``Module.compile``:
    parameter names, and so checkpoints and saved models, stay those of the plain model).
    Shapes vary with the padded width (a multiple of ``pad_multiple``), so a few widths
    are compiled once each before dynamic shapes take over. Opt-in (stage setting
    ``compile``): the first steps pay the compilation, which only a long run earns back."""
    for encoder in model.encoders:
        encoder.compile(backend=backend)


def prepare(cfg: TrainConfig, data: Any, eval_split: str = "val", *,
            cache_dir: Path | None = None, compile_encoder: bool = False) -> Run:
    """Build every object of a run; no training happens here. Built backbones and
    tokenized features are cached under ``cache_dir`` (None: features stay in memory and
    ``tiny`` is built in a private temporary folder). ``compile_encoder``: see
    :func:`compile_encoders`.

    Raises:
        ConfigError, ModelError, DataError: bad settings, backbone or split.
    """
    spec = get_agent(cfg.agent)
    device = resolve_device(cfg.device)
    precision = matmul_precision(device)
    if precision is not None:  # process-wide: every run on this device wants the same
        torch.set_float32_matmul_precision(precision)
    source = resolve_backbone(cfg.backbone, data, cache_dir=cache_dir)
    tok = load_tokenizer(source)
    feats = Path(cache_dir) / "features" if cache_dir is not None else None
    train_pairs, eval_pairs = data.split("train"), data.split(eval_split)
    kw = {"max_length": cfg.max_length, "stride": cfg.stride, "data_hash": data.data_hash,
          "cache_dir": feats}
    train_ws = build_windows(train_pairs, tok, **kw)
    eval_ws = build_windows(eval_pairs, tok, **kw)
    calibrate_on = None
    if eval_split != "val":  # the split scored chooses nothing: val chooses the decisions
        val_pairs = data.split("val")
        calibrate_on = (val_pairs, build_windows(val_pairs, tok, **kw))
    allowed = allowed_windows(train_pairs, train_ws.pair_index, cfg.train_fraction, cfg.seed)
    n_pos = float(train_ws.cls_target[allowed].sum())
    pos_weight = (allowed.sum() - n_pos) / max(n_pos, 1.0)
    seed_everything(cfg.seed)
    model = spec.build_model(cfg, source).to(device)
    if compile_encoder:
        compile_encoders(model)
    optimizer = make_optimizer(cfg, model, device)
    # Every epoch draws the same number of windows, so epoch 0's plan sizes the schedule.
    plan_size = len(plan_epoch(train_ws, spec.heads, cfg, allowed=allowed, epoch=0).index)
    steps = cfg.epochs * math.ceil(math.ceil(plan_size / cfg.batch_size) / cfg.grad_accum_steps)
    warmup = int(cfg.warmup_ratio * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, warmup, cfg.schedule))
    return Run(spec=spec, cfg=cfg, model=model, optimizer=optimizer, scheduler=scheduler,
               train_ws=train_ws, allowed=allowed, eval_pairs=eval_pairs, eval_ws=eval_ws,
               device=device, pad_id=tok.pad_token_id or 0, pos_weight=float(pos_weight),
               calibrate_on=calibrate_on)


def run_training(cfg: TrainConfig, data: Any, *,
                 report: Callable[[float, int], bool] | None = None,
                 checkpoint_dir: Path | None = None,
                 output_dir: Path | None = None,
                 eval_split: str = "val",
                 on_epoch: Callable[[EpochRecord], None] | None = None,
                 stop_requested: Callable[[], bool] | None = None,
                 keep: str = "best",
                 cache_dir: Path | None = None,
                 progress: Callable[[str, int], Any] | None = None,
                 checkpoint_every: int = 1, eval_every: int = 1,
                 compile_encoder: bool = False) -> TrainResult:
    """Train ``cfg`` on ``data``'s train split, evaluating on ``eval_split`` every
    ``eval_every`` epochs and after the last (see :func:`psy_agents.training.loop.fit`).
    ``compile_encoder`` compiles the encoder with ``torch.compile`` (see :func:`prepare`).

    After each epoch: evaluate -> value (the agent's objective) -> checkpoint (if
    ``checkpoint_dir``) -> ``on_epoch(record)`` -> ``report(value, epoch)`` (True = prune).
    Checkpoints and models are written off the training thread
    (:class:`~psy_agents.training.checkpoint.EpochSaver`): the checkpoint of epochs 0,
    ``checkpoint_every``, ... and, before returning or raising Preempted, of the last
    epoch finished. A checkpoint found at start resumes at the following epoch. With ``output_dir`` the
    best epoch's model (``keep="best"``) or the last epoch's (``keep="last"``: refit, where
    the eval split is the test split and no epoch may be selected on it), ``config.json``
    and ``metrics.json`` are written there. ``progress`` (``evaluate.ProgressFactory``)
    draws bars over the batches; None, the default, draws none.

    Raises:
        ConfigError: impossible settings, or a checkpoint of another configuration.
        ModelError: the backbone cannot be found or loaded.
        Preempted: ``stop_requested()`` became true; the last finished epoch is saved.
    """
    if keep not in ("best", "last"):
        raise ValueError(f"The value of `keep` is {keep!r}, but must be 'best' or 'last'")
    run = prepare(cfg, data, eval_split, cache_dir=cache_dir, compile_encoder=compile_encoder)
    cfg_dict = cfg.to_dict()
    saved = ckpt.load_checkpoint(checkpoint_dir, model=run.model, optimizer=run.optimizer,
                                 scheduler=run.scheduler, cfg=cfg_dict)
    state = State(**saved) if saved else State()
    resumed_from = state.epoch if saved else None
    tok = load_tokenizer(resolve_backbone(cfg.backbone, data, cache_dir=cache_dir))

    first = state.epoch
    with ckpt.EpochSaver(run, tok, cfg_dict, checkpoint_dir=checkpoint_dir,
                         output_dir=output_dir, keep=keep, every=checkpoint_every) as saver:
        stopped = fit(run, state, report=report, on_epoch=on_epoch,
                      stop_requested=stop_requested, save=saver.save, make_record=EpochRecord,
                      progress=progress, eval_every=eval_every)
    history = tuple(EpochRecord(**h) for h in state.history)
    best = history[[h.epoch for h in history].index(state.best_epoch)] if history else None
    result = TrainResult(best_value=state.best_value, best_epoch=state.best_epoch,
                         epochs_run=state.epoch - first, history=history,
                         metrics=dict(best.metrics) if best else {}, stopped=stopped,
                         resumed_from_epoch=resumed_from)
    if output_dir is not None:
        write_outputs(Path(output_dir), cfg, result, eval_split)
    return result


def write_outputs(out: Path, cfg: TrainConfig, result: TrainResult, split: str) -> None:
    """``config.json`` (the resolved TrainConfig) and ``metrics.json`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    spec = get_agent(cfg.agent)
    payload = {"agent": cfg.agent, "objective": spec.objective_name, "split": split,
               "best_value": result.best_value, "best_epoch": result.best_epoch,
               "stopped": result.stopped, "metrics": result.metrics,
               "history": [asdict(h) for h in result.history]}
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, sort_keys=True))
