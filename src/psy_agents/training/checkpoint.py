"""Epoch-end checkpoints (resume at the next epoch) and saved models (``launch eval``).

A checkpoint holds model, optimizer, scheduler, the python/numpy/torch RNG states, the
epoch, the best value and the history; it is written to a temp file and renamed, so a
worker killed mid-write leaves the previous checkpoint intact. A saved model is a directory:
``encoder0/`` (and ``encoder1/`` for joint) as HF model+tokenizer directories, ``heads.pt``
with every non-encoder weight, and ``config.json`` (the resolved TrainConfig).

During training, :class:`EpochSaver` writes both off the training thread: at an epoch's end
the state is copied to the CPU, and a :class:`BackgroundWriter` thread writes it while the
next epoch trains; a step never waits for the file system.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from psy_agents.agents.backbones import check_keys, load_pretrained
from psy_agents.agents.registry import get_agent
from psy_agents.errors import ConfigError, ModelError, Preempted
from psy_agents.lazy import lazy_import
from psy_agents.training.calibrate import DECISION_FILE, Decision, decision_from_metrics
from psy_agents.training.config import TrainConfig

torch = lazy_import("torch")
_log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
# The saved model's folder under a run's ``output_dir`` (``run_training`` writes it there).
MODEL_DIR = "model"


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_copy(obj: Any, memo: dict[tuple, Any] | None = None) -> Any:
    """``obj`` (dicts, lists and tuples of tensors and immutable values) with every tensor
    copied to the CPU, so that training may go on changing the originals. A tensor seen
    twice (tied weights: one view of one memory) is copied once."""
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        key = (obj.device, obj.data_ptr(), obj.dtype, tuple(obj.shape), tuple(obj.stride()))
        if key not in memo:
            memo[key] = obj.detach().to("cpu", copy=True)
        return memo[key]
    if isinstance(obj, dict):
        return {k: cpu_copy(v, memo) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        items = [cpu_copy(v, memo) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def checkpoint_payload(model: Any, optimizer: Any, scheduler: Any, cfg: dict[str, Any],
                       train_state: dict[str, Any]) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds, taken now: every tensor a CPU copy."""
    memo: dict[tuple, Any] = {}
    return {"model": cpu_copy(model.state_dict(), memo),
            "optimizer": cpu_copy(optimizer.state_dict(), memo),
            "scheduler": cpu_copy(scheduler.state_dict(), memo), "rng": rng_state(),
            "cfg": cfg, "state": train_state}


def write_checkpoint(directory: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (:func:`checkpoint_payload`) as ``checkpoint.pt``, atomically."""
    _atomic(Path(directory) / CHECKPOINT, lambda tmp: torch.save(payload, tmp))


class BackgroundWriter:
    """Runs writes one at a time on a background thread, in the order they are submitted.

    ``submit`` first waits for the write before it (at most one is in flight), then returns
    at once. ``wait`` blocks until the last write is done and raises its error, if any. The
    thread is not a daemon: a process that returns from its main thread still finishes a
    write in flight before it exits.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self.wait()

        def run() -> None:
            try:
                write()
            except BaseException as exc:  # raised in the training thread by wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="checkpoint-writer")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error


class EpochSaver:
    """``save(state, improved)`` for :func:`psy_agents.training.loop.fit`: writes the best
    (``keep="best"``) or every (``keep="last"``) epoch's model under ``output_dir`` and the
    checkpoint of epochs 0, ``every``, ``2 * every``, ... under ``checkpoint_dir``, off the
    training thread.

    On the training thread, ``save`` copies the state to the CPU (the one cost a step can
    see); a :class:`BackgroundWriter` writes it, the model before the checkpoint that names
    it the best (a run killed in between resumes before that epoch and computes it again).
    The latest epoch's checkpoint is kept until it is written: leaving the ``with`` block
    normally or by :class:`~psy_agents.errors.Preempted` writes it (the last epoch run, or
    the last one finished before the stop) and waits for every write; leaving by another
    error waits for the write in flight and drops the rest.
    """

    def __init__(self, run: Any, tokenizer: Any, cfg: dict[str, Any], *,
                 checkpoint_dir: Path | None, output_dir: Path | None, keep: str,
                 every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"The value of `checkpoint_every` is {every}, but must be >= 1")
        self.run, self.tokenizer, self.cfg, self.keep = run, tokenizer, cfg, keep
        self.checkpoint_dir, self.output_dir, self.every = checkpoint_dir, output_dir, every
        self.writer = BackgroundWriter()
        self._pending: dict[str, Any] | None = None  # the latest checkpoint, not written yet

    def save(self, state: Any, improved: bool) -> None:
        model_due = self.output_dir is not None and (improved or self.keep == "last")
        ckpt_due = self.checkpoint_dir is not None and state.epoch % self.every == 0
        self._pending = None  # superseded: freed before the next copy is made
        if model_due or ckpt_due:
            self.writer.wait()  # one state in flight at a time, so at most two in memory
        model = self.run.model
        if self.checkpoint_dir is None:
            if model_due:
                self._write(cpu_copy(model.state_dict()), None, decision=self._decision(state))
            return
        payload = checkpoint_payload(model, self.run.optimizer, self.run.scheduler,
                                     self.cfg, dataclasses.asdict(state))
        if model_due or ckpt_due:
            self._write(payload["model"] if model_due else None, payload if ckpt_due else None,
                        decision=self._decision(state) if model_due else None)
        if not ckpt_due:
            self._pending = payload

    def _decision(self, state: Any) -> Decision | None:
        """The decision of the latest evaluated epoch (the one a model is saved for)."""
        if not state.history:
            return None
        return decision_from_metrics(state.history[-1]["metrics"], self.cfg["decision"])

    def _write(self, weights: dict[str, Any] | None, checkpoint: dict[str, Any] | None, *,
               decision: Decision | None = None) -> None:
        model, tokenizer, cfg = self.run.model, self.tokenizer, self.cfg
        out, ckpt_dir = self.output_dir, self.checkpoint_dir

        def write() -> None:
            if weights is not None:
                save_model(Path(out) / MODEL_DIR, model, tokenizer, cfg, weights=weights,
                           decision=decision)
            if checkpoint is not None:
                write_checkpoint(ckpt_dir, checkpoint)

        self.writer.submit(write)

    def flush(self) -> None:
        """Write the kept checkpoint if it is not written yet; wait for every write."""
        if self._pending is not None:
            payload, self._pending = self._pending, None
            self._write(None, payload)
        self.writer.wait()

    def __enter__(self) -> EpochSaver:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None or isinstance(exc, Preempted):
            self.flush()
            return
        self._pending = None
        try:
            self.writer.wait()
        except Exception as write_error:  # the run's own error is the one raised
            _log.warning("a checkpoint write failed as well: %s", write_error)


def load_checkpoint(directory: Path | None, *, model: Any, optimizer: Any, scheduler: Any,
                    cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Restore a checkpoint into the given objects; return its train state, or ``None``.

    Raises:
        ConfigError: the checkpoint was written by a run with a different configuration.
    """
    path = Path(directory) / CHECKPOINT if directory else None
    if path is None or not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload["cfg"] != cfg:
        changed = sorted(k for k in cfg if payload["cfg"].get(k) != cfg[k])
        raise ConfigError(f"checkpoint {path} belongs to a run with other settings "
                          f"({', '.join(changed)})",
                          "delete the checkpoint directory or use the original settings")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    set_rng_state(payload["rng"])
    return payload["state"]


def save_model(out_dir: Path, model: Any, tokenizer: Any, cfg: dict[str, Any], *,
               weights: dict[str, Any] | None = None, decision: Decision | None = None) -> None:
    """Save ``model`` as a directory :func:`load_model` reads (overwrites in place).

    ``weights``: the model's state dict to write (a copy taken earlier, while training goes
    on); default: its current one. ``decision``: the thresholds chosen on val for it
    (``decision.json``, read by ``launch eval``); None writes none.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = model.state_dict() if weights is None else weights
    for i, enc in enumerate(model.encoders):
        prefix = f"encoders.{i}."
        enc.save_pretrained(out_dir / f"encoder{i}", state_dict={
            k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
        tokenizer.save_pretrained(out_dir / f"encoder{i}")
    heads = {k: v for k, v in weights.items() if not k.startswith("encoders.")}
    _atomic(out_dir / "heads.pt", lambda tmp: torch.save(heads, tmp))
    _atomic(out_dir / "config.json",
            lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2, sort_keys=True)))
    if decision is not None:
        _atomic(out_dir / DECISION_FILE, lambda tmp: decision.save_as(Path(tmp)))


def load_model(model_dir: Path) -> tuple[Any, Any, Any]:
    """``(spec, cfg, model)`` of a saved model directory, on the CPU, in eval mode.

    Raises:
        ModelError: the directory is missing or is not a saved model.
    """
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if not cfg_path.exists() or not (model_dir / "heads.pt").exists():
        raise ModelError(f"{model_dir} is not a saved model (no config.json / heads.pt)",
                         "pass the model/ directory written by `launch train`")
    cfg = TrainConfig.from_dict(json.loads(cfg_path.read_text()), source=str(cfg_path))
    spec = get_agent(cfg.agent)
    model = spec.build_model(cfg, str(model_dir / "encoder0"))
    for i in range(1, len(model.encoders)):
        model.encoders[i].load_state_dict(load_pretrained(str(model_dir / f"encoder{i}"))[1])
    heads = torch.load(model_dir / "heads.pt", map_location="cpu")
    check_keys(f"{model_dir}/heads.pt (agent {cfg.agent})",
               [k for k in model.state_dict() if not k.startswith("encoders.")], heads,
               "re-save the model with `launch train`")
    # Every weight but the encoders' (read from encoder*/ above), as just checked.
    model.load_state_dict(heads, strict=False)
    model.eval()
    return spec, cfg, model
