"""Usage: launch eval --model DIR [--split val|test] [--data-dir DIR]

Evaluates a model saved by `launch train` and prints (and writes ``eval-<split>.json``
beside it) the same metrics as training, per symptom too, after a line that says what was
scored: ``scored <model dir> (agent joint) on the val split of data/sample: 12 posts, 108
pairs``. Decisions (symptom thresholds, the evidence no-answer margin) are the ones chosen
on val when the model was trained (``decision.json`` in the model directory); the figures at
the fixed threshold are printed too (``fixed/...``). The criteria-type agents' symptom F1s
(each symptom's and the macro average) carry a 95 % bootstrap interval over posts,
``[low, high]`` after the figure. A bar over the batches is drawn on stderr when it is a
terminal; nothing extra otherwise.
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
    from psy_agents.cli.progress import batch_bars
    from psy_agents.training.calibrate import DECISION_FILE
    from psy_agents.training.scoring import baseline_value, score_model

    data = load_data(settings.data_dir, limit_posts)
    scored = score_model(model_dir, data, split, cache_dir=settings.cache,
                         progress=batch_bars(click.get_text_stream("stderr")))
    if not scored.decision_saved:  # saved before decisions were: the fixed threshold
        click.echo(f"{model_dir} has no {DECISION_FILE}: decisions at the fixed threshold "
                   f"{scored.decision.default}", err=True)
    base, base_metrics = baseline_value(data, split, scored.agent)
    metrics, intervals = scored.metrics, scored.intervals
    payload = {"agent": scored.agent, "model_dir": str(model_dir), "split": split,
               "data_dir": str(settings.data_dir), "posts": scored.posts,
               "pairs": scored.pairs, "objective": scored.objective_name,
               "value": scored.value, "decision": scored.decision.method,
               "metrics": metrics,
               "intervals": {k: [v.low, v.high] for k, v in intervals.items()},
               "baseline": {"value": base, "metrics": base_metrics}}
    (Path(model_dir) / f"eval-{split}.json").write_text(json.dumps(payload, indent=2))
    click.echo(f"scored {model_dir} (agent {scored.agent}) on the {split} split of "
               f"{settings.data_dir}: {scored.posts} posts, {scored.pairs} pairs")
    for key in sorted(metrics):
        shown = f" {intervals[key]}" if key in intervals else ""
        click.echo(f"{key:32s} {metrics[key]:.4f}{shown}")
    objective = f"objective ({scored.objective_name})"
    shown = f" {scored.value_interval()}" if scored.value_interval() else ""
    click.echo(f"{objective:32s} {scored.value:.4f}{shown}")
    click.echo(f"{'baseline (TF-IDF + LR)':32s} {base:.4f}")
