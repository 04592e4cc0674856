"""Usage: launch eval --model DIR [--split val|test] [--data-dir DIR]

Evaluates a model saved by `launch train` and prints (and writes ``eval-<split>.json``
beside it) the same metrics as training, per symptom too, after a line that says what was
scored: ``scored <model dir> (agent joint) on the val split of data/sample: 12 posts, 108
pairs``. A bar over the batches is drawn on stderr when it is a terminal; nothing extra
otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from psy_agents.cli.options import shared_options
from psy_agents.cli.train import LIMIT, load_data
from psy_agents.settings import Settings


@click.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path),
              help="The model/ directory written by `launch train`.")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@shared_options("data_dir", "runs_dir", "cache_dir")
@LIMIT
def eval_cmd(model_dir: Path, split: str, settings: Settings, limit_posts: int | None) -> None:
    """Evaluate a saved model on the val or test split."""
    from psy_agents.agents.backbones import load_tokenizer
    from psy_agents.cli.progress import batch_bars
    from psy_agents.data.features import build_windows
    from psy_agents.training.checkpoint import load_model
    from psy_agents.training.evaluate import evaluate

    spec, cfg, model = load_model(model_dir)
    data = load_data(settings.data_dir, limit_posts)
    tok = load_tokenizer(str(Path(model_dir) / "encoder0"))
    pairs = data.split(split)
    ws = build_windows(pairs, tok, max_length=cfg.max_length, stride=cfg.stride,
                       data_hash=data.data_hash, cache_dir=settings.cache / "features")
    metrics = evaluate(model, pairs, ws, heads=spec.heads, cfg=cfg.replace(device="cpu"),
                       device="cpu", pad_id=tok.pad_token_id or 0,
                       progress=batch_bars(click.get_text_stream("stderr")))
    n_posts = len({p.post_id for p in pairs})
    payload = {"agent": cfg.agent, "model_dir": str(model_dir), "split": split,
               "data_dir": str(settings.data_dir), "posts": n_posts, "pairs": len(pairs),
               "objective": spec.objective_name, "value": spec.objective(metrics),
               "metrics": metrics}
    (Path(model_dir) / f"eval-{split}.json").write_text(json.dumps(payload, indent=2))
    click.echo(f"scored {model_dir} (agent {cfg.agent}) on the {split} split of "
               f"{settings.data_dir}: {n_posts} posts, {len(pairs)} pairs")
    for key in sorted(metrics):
        click.echo(f"{key:32s} {metrics[key]:.4f}")
    click.echo(f"{'objective (' + spec.objective_name + ')':32s} {payload['value']:.4f}")
