"""Usage: launch train --agent A [--config params.json] [--backbone B] [--epochs N] [--out DIR]

Trains one configuration on the train split, evaluates on val each epoch, and writes
``metrics.json``, ``config.json`` and the best model under the output directory. Logs
params and per-epoch metrics to MLflow when a tracking URI is set (an outage only warns).
On stderr: a bar over each epoch's batches and each evaluation's when stderr is a terminal,
and a line per epoch (loss, objective, seconds) in every case.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.cli.options import shared_options
from psy_agents.errors import ConfigError
from psy_agents.settings import Settings
from psy_agents.training.config import TrainConfig


def _default(field: str) -> Any:
    """TrainConfig's default for ``field`` (what a flag left out and absent from --config
    gets)."""
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == field)


LIMIT = click.option("--limit-posts", type=int, default=None, hidden=True,
                     help="Keep the first N posts of each split (quick checks).")


def load_params(path: Path | None) -> dict[str, Any]:
    """The params.json mapping (empty without a file).

    Raises:
        ConfigError: ``path`` is missing, a directory, not JSON, or not a JSON object.
    """
    if path is None:
        return {}
    if Path(path).is_dir():
        inside = Path(path) / "config.json"
        raise ConfigError(f"--config {path} is a directory, not a params file",
                          f"pass its {inside} (what `launch train` wrote there)"
                          if inside.is_file() else
                          'pass a JSON file of TrainConfig fields, e.g. {"lr": 1e-4, ...}')
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", "check the --config path") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})", "fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object of parameters",
                          'write it as {"lr": 1e-4, ...}')
    return data


def load_data(data_dir: Path, limit_posts: int | None) -> Any:
    """The prepared data, optionally cut to the first ``limit_posts`` posts per split."""
    from psy_agents.data.prepare import prepare_data

    data = prepare_data(data_dir)
    if not limit_posts:
        return data

    def cut(pairs: tuple[Any, ...]) -> tuple[Any, ...]:
        keep = list(dict.fromkeys(p.post_id for p in pairs))[:limit_posts]
        return tuple(p for p in pairs if p.post_id in set(keep))

    return dataclasses.replace(data, train=cut(data.train), val=cut(data.val),
                               test=cut(data.test))


def build_config(agent: str, params: dict[str, Any], source: str, **flags: Any) -> Any:
    from psy_agents.agents.registry import get_agent

    get_agent(agent)  # an unknown name is one ConfigError line listing the agents
    merged = {**params, "agent": agent, **{k: v for k, v in flags.items() if v is not None}}
    return TrainConfig.from_dict(merged, source=source)


@click.command("train", context_settings={"show_default": True})
@click.option("--agent", required=True, type=click.Choice(AGENT_NAMES),
              help="The agent to train.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="params.json with TrainConfig fields (flags override it).")
@click.option("--backbone", default=None,
              help="tiny, minilm, a model directory or a hub name "
                   f"[default: --config's, else {_default('backbone')}].")
@click.option("--epochs", type=int, default=None,
              help=f"Number of epochs [default: --config's, else {_default('epochs')}].")
@click.option("--seed", type=int, default=None,
              help=f"Training seed [default: --config's, else {_default('seed')}].")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory [default: <runs-dir>/train/<agent>].")
@shared_options("data_dir", "runs_dir", "cache_dir", "tracking_uri")
@LIMIT
def train(agent: str, config_path: Path | None, backbone: str | None, epochs: int | None,
          seed: int | None, out_dir: Path | None, settings: Settings,
          limit_posts: int | None) -> None:
    """Train one agent configuration and evaluate it on the val split."""
    cfg = build_config(agent, load_params(config_path), str(config_path or "flags"),
                       backbone=backbone, epochs=epochs, seed=seed)
    from psy_agents.agents.backbones import resolve_backbone
    from psy_agents.cli.progress import batch_bars
    from psy_agents.tracking import Tracker
    from psy_agents.training.run import run_training

    if cfg.backbone != "tiny":  # fail on a bad backbone before reading data or drawing a bar
        resolve_backbone(cfg.backbone)
    data = load_data(settings.data_dir, limit_posts)

    out_dir = out_dir or settings.runs_dir / "train" / cfg.agent
    # `launch train` is a study of one trial (#0) in the MLflow experiment "train".
    tracker = Tracker.maybe(settings.tracking_uri, "train", f"train-{cfg.agent}",
                            {"agent": cfg.agent, "data_hash": data.data_hash})
    if tracker is not None:
        tracker.start_trial(0, cfg.to_dict())

    def on_epoch(rec: Any) -> None:
        if tracker is not None:
            tracker.log_epoch(0, rec.epoch, rec.value,
                              {"train_loss": rec.train_loss, **rec.metrics})
        click.echo(f"epoch {rec.epoch + 1}/{cfg.epochs}: loss {rec.train_loss:.4f} "
                   f"objective {rec.value:.4f} ({rec.seconds:.1f}s)", err=True)

    result = run_training(cfg, data, output_dir=out_dir, on_epoch=on_epoch,
                          cache_dir=settings.cache,
                          progress=batch_bars(click.get_text_stream("stderr")))
    if tracker is not None:
        tracker.end_trial(0, "COMPLETE", result.best_value, result.metrics)
    click.echo(json.dumps({"agent": cfg.agent, "best_value": result.best_value,
                           "best_epoch": result.best_epoch, "stopped": result.stopped,
                           "output_dir": str(out_dir),
                           "metrics": {k: round(v, 4) for k, v in result.metrics.items()}},
                          indent=2))
