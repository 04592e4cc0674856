"""Usage: launch train --agent A [--config params.json] [--backbone B] [--epochs N] [--out DIR]

Trains one configuration on the train split, evaluates on val each epoch, and writes
``metrics.json``, ``config.json`` and the best model under the output directory. Logs
params and per-epoch metrics to MLflow when a tracking URI is set (an outage only warns).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from psy_agents.errors import ConfigError

DATA_DIR = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                        help="Folder with the ReDSM5 CSVs [env: PSY_DATA_DIR; default: data/sample].")
LIMIT = click.option("--limit-posts", type=int, default=None, hidden=True,
                     help="Keep the first N posts of each split (quick checks).")


def load_params(path: Path | None) -> dict[str, Any]:
    """The params.json mapping (empty without a file); ConfigError on unreadable JSON."""
    if path is None:
        return {}
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


def load_data(data_dir: Path | None, limit_posts: int | None) -> Any:
    """The prepared data, optionally cut to the first ``limit_posts`` posts per split."""
    from psy_agents.data.prepare import default_data_dir, prepare_data

    data = prepare_data(data_dir or default_data_dir())
    if not limit_posts:
        return data

    def cut(pairs: tuple[Any, ...]) -> tuple[Any, ...]:
        keep = list(dict.fromkeys(p.post_id for p in pairs))[:limit_posts]
        return tuple(p for p in pairs if p.post_id in set(keep))

    return dataclasses.replace(data, train=cut(data.train), val=cut(data.val),
                               test=cut(data.test))


class Tracker:
    """MLflow logging that never fails a run: the first error warns, then logging stops."""

    def __init__(self, uri: str | None, run_name: str) -> None:
        self.active = bool(uri)
        if self.active:
            self._call(self._start, uri, run_name)

    def _start(self, uri: str, run_name: str) -> None:
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.start_run(run_name=run_name)

    def _call(self, fn: Any, *args: Any) -> None:
        if not self.active:
            return
        try:
            fn(*args)
        except Exception as exc:  # tracking is optional: say so once and keep training
            self.active = False
            click.echo(f"warning: MLflow tracking disabled ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''})", err=True)

    def params(self, params: dict[str, Any]) -> None:
        import mlflow

        self._call(mlflow.log_params, params)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        import mlflow

        clean = {k.replace("/", "."): float(v) for k, v in metrics.items()}
        self._call(lambda: mlflow.log_metrics(clean, step=step))

    def end(self) -> None:
        import mlflow

        self._call(mlflow.end_run)


def build_config(agent: str, params: dict[str, Any], source: str, **flags: Any) -> Any:
    from psy_agents.agents.registry import get_agent
    from psy_agents.training.config import TrainConfig

    get_agent(agent)
    merged = {**params, "agent": agent, **{k: v for k, v in flags.items() if v is not None}}
    return TrainConfig.from_dict(merged, source=source)


@click.command("train")
@click.option("--agent", required=True, help="criteria, evidence, share or joint.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="params.json with TrainConfig fields (flags override it).")
@click.option("--backbone", default=None, help="tiny, minilm, a model directory or a hub name.")
@click.option("--epochs", type=int, default=None, help="Number of epochs.")
@click.option("--seed", type=int, default=None, help="Training seed.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory [default: runs/train/<agent>].")
@click.option("--mlflow-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow tracking URI [env: MLFLOW_TRACKING_URI].")
@DATA_DIR
@LIMIT
def train(agent: str, config_path: Path | None, backbone: str | None, epochs: int | None,
          seed: int | None, out_dir: Path | None, mlflow_uri: str | None,
          data_dir: Path | None, limit_posts: int | None) -> None:
    """Train one agent configuration and evaluate it on the val split."""
    cfg = build_config(agent, load_params(config_path), str(config_path or "flags"),
                       backbone=backbone, epochs=epochs, seed=seed)
    from psy_agents.agents.backbones import resolve_backbone
    from psy_agents.training.run import run_training

    if cfg.backbone != "tiny":  # fail on a bad backbone before reading data or drawing a bar
        resolve_backbone(cfg.backbone)
    data = load_data(data_dir, limit_posts)

    out_dir = out_dir or Path("runs") / "train" / cfg.agent
    tracker = Tracker(mlflow_uri, f"train-{cfg.agent}")
    tracker.params(cfg.to_dict())
    with click.progressbar(length=cfg.epochs, label=f"training {cfg.agent}",
                           file=click.get_text_stream("stderr")) as bar:
        def on_epoch(rec: Any) -> None:
            bar.update(1)
            tracker.metrics({"train_loss": rec.train_loss, "value": rec.value, **rec.metrics},
                            rec.epoch)
            click.echo(f"  epoch {rec.epoch}: loss {rec.train_loss:.4f} "
                       f"objective {rec.value:.4f} ({rec.seconds:.1f}s)", err=True)

        result = run_training(cfg, data, output_dir=out_dir, on_epoch=on_epoch)
    tracker.end()
    click.echo(json.dumps({"agent": cfg.agent, "best_value": result.best_value,
                           "best_epoch": result.best_epoch, "stopped": result.stopped,
                           "output_dir": str(out_dir),
                           "metrics": {k: round(v, 4) for k, v in result.metrics.items()}},
                          indent=2))
