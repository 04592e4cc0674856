"""Epoch-end checkpoints (resume at the next epoch) and saved models (``launch eval``).

A checkpoint holds model, optimizer, scheduler, the python/numpy/torch RNG states, the
epoch, the best value and the history; it is written to a temp file and renamed, so a
worker killed mid-write leaves the previous checkpoint intact. A saved model is a directory:
``encoder0/`` (and ``encoder1/`` for joint) as HF model+tokenizer directories, ``heads.pt``
with every non-encoder weight, and ``config.json`` (the resolved TrainConfig).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from psy_agents.agents.backbones import load_pretrained
from psy_agents.agents.registry import get_agent
from psy_agents.errors import ConfigError, ModelError
from psy_agents.lazy import lazy_import
from psy_agents.training.config import TrainConfig

torch = lazy_import("torch")

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


def save_checkpoint(directory: Path, *, model: Any, optimizer: Any, scheduler: Any,
                    cfg: dict[str, Any], train_state: dict[str, Any]) -> None:
    """Write ``checkpoint.pt`` atomically (idempotent for the same state)."""
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "rng": rng_state(), "cfg": cfg,
               "state": train_state}
    _atomic(Path(directory) / CHECKPOINT, lambda tmp: torch.save(payload, tmp))


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


def save_model(out_dir: Path, model: Any, tokenizer: Any, cfg: dict[str, Any]) -> None:
    """Save ``model`` as a directory :func:`load_model` reads (overwrites in place)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, enc in enumerate(model.encoders):
        enc.save_pretrained(out_dir / f"encoder{i}")
        tokenizer.save_pretrained(out_dir / f"encoder{i}")
    enc_keys = {f"encoders.{k}" for k in model.encoders.state_dict()}
    heads = {k: v for k, v in model.state_dict().items() if k not in enc_keys}
    _atomic(out_dir / "heads.pt", lambda tmp: torch.save(heads, tmp))
    _atomic(out_dir / "config.json",
            lambda tmp: Path(tmp).write_text(json.dumps(cfg, indent=2, sort_keys=True)))


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
    missing = model.load_state_dict(torch.load(model_dir / "heads.pt", map_location="cpu"),
                                    strict=False)
    if missing.unexpected_keys:
        raise ModelError(f"{model_dir}/heads.pt does not match agent {cfg.agent}",
                         "re-save the model with `launch train`")
    model.eval()
    return spec, cfg, model
