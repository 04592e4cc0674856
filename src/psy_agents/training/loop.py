"""The training loop, readable top to bottom: epochs -> batches -> loss -> step -> evaluate.

``fit`` runs the epochs of one prepared run (see ``run.run_training`` for the preparation):
each epoch trains (AMP, gradient accumulation, clipping, scheduler step), evaluates, writes
the checkpoint, calls ``on_epoch`` and ``report`` (which may prune), and applies patience.
A ``progress`` factory (``evaluate.ProgressFactory``) draws a bar per epoch and per
evaluation; None (the default, and the HPO worker's choice) draws none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from psy_agents.errors import Preempted
from psy_agents.lazy import lazy_import
from psy_agents.training.batching import batches, collate, plan_epoch, to_device
from psy_agents.training.evaluate import ProgressFactory, autocast, evaluate, open_bar

torch = lazy_import("torch")


@dataclass
class Run:
    """Everything one run trains with (built by ``run.prepare``)."""

    spec: Any
    cfg: Any
    model: Any
    optimizer: Any
    scheduler: Any
    train_ws: Any
    allowed: np.ndarray
    eval_pairs: tuple[Any, ...]
    eval_ws: Any
    device: str
    pad_id: int
    pos_weight: float
    # (val pairs, val windows) where the eval split is another one (a refit scoring test):
    # decisions are chosen on val and applied to the eval split.
    calibrate_on: tuple[Any, Any] | None = None


@dataclass
class State:
    """What survives an epoch boundary (saved in the checkpoint)."""

    epoch: int = -1  # last finished epoch
    best_value: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class StepHook(Protocol):
    """Told where each training step begins and ends (``launch bench train`` times steps
    and counts syncs with one); it must not read the device itself."""

    def begin(self) -> None: ...

    def end(self, windows: int, tokens: int) -> None:
        """The step is launched: ``windows`` in the batch, ``tokens`` of them not padding."""


def train_epoch(run: Run, epoch: int, *, stop_requested: Callable[[], bool] | None = None,
                pad_to: int | None = None, progress: ProgressFactory | None = None,
                step_hook: StepHook | None = None,
                max_steps: int | None = None) -> tuple[float, int]:
    """One pass over the epoch's windows (its first ``max_steps`` batches, when given);
    returns ``(mean loss, windows seen)``. ``progress`` draws a bar advanced once per
    batch (None: no bar); ``step_hook`` is told each step's bounds.

    Raises:
        Preempted: ``stop_requested()`` turned true at a batch boundary.
    """
    cfg, model, opt = run.cfg, run.model, run.optimizer
    plan = plan_epoch(run.train_ws, run.spec.heads, cfg, allowed=run.allowed, epoch=epoch)
    order = batches(run.train_ws.lengths[plan.index], cfg.batch_size, shuffle=True,
                    seed=cfg.seed, epoch=epoch)[:max_steps]
    # Dropout draws from torch's global RNG; reseeding per epoch makes a resumed epoch
    # identical to the uninterrupted one even if something else consumed random numbers.
    torch.manual_seed(cfg.seed * 100_003 + epoch)
    model.train()
    multiple = cfg.pad_multiple_on(run.device)
    # The loss is summed on the device and read once, after the last step: a step never
    # waits for the device, so the host runs ahead launching the next one.
    total = torch.zeros((), dtype=torch.float64, device=run.device)
    seen = 0
    bar = open_bar(progress, f"epoch {epoch + 1}/{cfg.epochs}", len(order))
    with closing(bar):
        for step, pos in enumerate(order):
            if stop_requested is not None and stop_requested():
                raise Preempted(f"stop requested during epoch {epoch}")
            if step_hook is not None:
                step_hook.begin()
            host = collate(run.train_ws, plan.index[pos], pad_id=run.pad_id, pad_to=pad_to,
                           span_mask=plan.span_mask[pos], cls_weight=plan.cls_weight[pos],
                           pad_multiple=multiple, max_width=cfg.max_length)
            batch = to_device(host, run.device)
            with autocast(run.device, cfg.bf16):
                loss = run.spec.loss(model(batch), batch, cfg, run.pos_weight)
            (loss / cfg.grad_accum_steps).backward()
            total.add_(loss.detach(), alpha=len(pos))
            seen += len(pos)
            if (step + 1) % cfg.grad_accum_steps == 0 or step + 1 == len(order):
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                run.scheduler.step()
                opt.zero_grad(set_to_none=True)
            if step_hook is not None:
                step_hook.end(len(pos), int(host["attention_mask"].sum()))  # host arrays
            bar.update(1)  # a count of batches only: nothing is read from the device
    return float(total) / max(seen, 1), seen  # the epoch's one read of the device


def evaluates(epoch: int, every: int, last: int) -> bool:
    """Whether epoch ``epoch`` (0-based) is evaluated: every ``every``-th, and the ``last``."""
    return (epoch + 1) % every == 0 or epoch == last


def fit(run: Run, state: State, *, report: Callable[[float, int], bool] | None,
        on_epoch: Callable[[Any], None] | None, stop_requested: Callable[[], bool] | None,
        save: Callable[[State, bool], None], make_record: Callable[..., Any],
        progress: ProgressFactory | None = None, eval_every: int = 1) -> str:
    """Train epochs ``state.epoch + 1 .. cfg.epochs - 1``; return why it stopped.

    Epochs ``eval_every - 1``, ``2 * eval_every - 1``, ... and the last are evaluated; only
    they are recorded, reported and can stop the run. Patience counts epochs (an epoch
    without evaluation since the best counts as one without gain), so ``patience`` means
    the same whatever ``eval_every`` is.
    ``save(state, improved)`` writes the checkpoint (and the best model) after every epoch;
    it runs after evaluation and before ``on_epoch``/``report``; it may hand the write to a
    background thread, so a run killed between a report and the end of that write
    recomputes that epoch, exactly.
    ``progress`` draws a bar over each epoch's batches and each evaluation's (None: none).
    """
    cfg = run.cfg
    if state.bad_epochs >= cfg.patience:
        return "early_stopped"
    t0 = time.perf_counter()
    for epoch in range(state.epoch + 1, cfg.epochs):
        loss, _ = train_epoch(run, epoch, stop_requested=stop_requested, progress=progress)
        if not evaluates(epoch, eval_every, cfg.epochs - 1):
            state.epoch = epoch
            save(state, False)
            continue
        metrics = evaluate(run.model, run.eval_pairs, run.eval_ws, heads=run.spec.heads,
                           cfg=cfg, device=run.device, pad_id=run.pad_id, progress=progress,
                           calibrate_on=run.calibrate_on)
        value = float(run.spec.objective(metrics))
        improved = value > state.best_value
        if improved:
            state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
        else:  # every epoch since the last evaluation went without a gain
            state.bad_epochs += epoch - (state.history[-1]["epoch"] if state.history else -1)
        record = make_record(epoch=epoch, train_loss=loss, value=value, metrics=metrics,
                             seconds=time.perf_counter() - t0)
        t0 = time.perf_counter()
        state.history.append(record.__dict__)
        state.epoch = epoch
        save(state, improved)
        if on_epoch is not None:
            on_epoch(record)
        if report is not None and report(value, epoch):
            return "pruned"
        if state.bad_epochs >= cfg.patience:
            return "early_stopped"
    return "completed"
