"""Search spaces: sampling real Optuna trials, every knob changing training, and pure
narrowing."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading

import optuna
import pytest

from psy_agents.hpo import spaces
from psy_agents.hpo.objective import Objective
from psy_agents.hpo.spaces import Param, narrow
from psy_agents.hpo.spec import StudySpec
from psy_agents.hpo.stages import StageConfig
from psy_agents.settings import Settings
from psy_agents.training.config import TrainConfig
from psy_agents.training.loop import train_epoch
from psy_agents.training.run import prepare
from tests.training.helpers import HandData, corpus_texts, sleep_pairs

AGENTS = ("criteria", "evidence", "share", "joint")


def _sample(space, n=30, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed),
                                direction="maximize")
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(spaces.suggest(trial, space))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("agent", AGENTS)
def test_every_sampled_param_lands_in_train_config(agent):
    space = spaces.agent_space(agent, ("tiny", "minilm"), epochs=8)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert {p.name for p in space} <= fields
    samples = _sample(space, n=60)
    for params in samples:
        cfg = TrainConfig.from_dict({"agent": agent, **params})
        for name, value in params.items():
            assert getattr(cfg, name) == value, name
    # every parameter really varies (whether training reads it: the test below)
    for p in space:
        assert len({s[p.name] for s in samples if p.name in s}) >= 2, p.name


# A point of each space where every knob can show in the first epoch: the focal loss (so
# focal_gamma is sampled); batches of 8, no accumulation, the most no-answer windows and
# 4 epochs, so the first epoch of the hand data is 2 optimizer steps of 8 planned, and
# without warmup the second step already feels the schedule (a 20 % warmup is 1 step).
# Other knobs start at their first choice or lowest value (lr at its highest).
BASE = {"cls_loss": "focal", "batch_size": 8, "grad_accum_steps": 1, "epochs": 4,
        "warmup_ratio": 0.0, "neg_ratio": 4.0, "max_length": 128, "stride": 48}
KNOB_STAGE = StageConfig(name="s1", trials=4, epochs=4, patience=4, pruner="none")
# Posts of ~150-250 tokens: two or three windows of 128 tokens, one of 512.
KNOB_DATA = HandData(train=sleep_pairs(8, 0, max_before=20), val=sleep_pairs(2, 1), test=())


@pytest.fixture(scope="module")
def two_backbones(tmp_path_factory) -> tuple[str, str]:
    """Two micro BERTs (hidden 32, 1 layer) on one WordPiece vocabulary, initialized from
    seeds 0 and 1: the ``backbone`` knob, at a fraction of the tiny model's cost."""
    import shutil

    import torch
    from transformers import BertConfig, BertModel

    from psy_agents.agents.backbones import build_tiny_backbone

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("backbones")
    first = build_tiny_backbone(corpus_texts(), root / "seed-0", vocab_size=400)
    second = shutil.copytree(first, root / "seed-1")
    config = BertConfig.from_pretrained(first)
    config.update({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "intermediate_size": 64})
    for seed, folder in enumerate((first, second)):
        torch.manual_seed(seed)
        BertModel(config).save_pretrained(folder)
    return str(first), str(second)


def _base_point(space: spaces.Space) -> dict:
    point = {}
    for p in space:
        if p.name in BASE:
            point[p.name] = BASE[p.name]
        elif p.kind == "categorical":
            point[p.name] = p.choices[0]
        else:
            point[p.name] = p.high if p.name == "lr" else p.low
    return point


def _other_value(p: Param, value):
    """A value of ``p``'s range other than ``value``: the last other choice, or the
    farther bound."""
    if p.kind == "categorical":
        return [c for c in p.choices if c != value][-1]
    return p.low if abs(value - p.high) < abs(value - p.low) else p.high


def _what_training_did(objective: Objective, space: spaces.Space, point: dict) -> str:
    """Digest of the weights and loss after the first epoch, trained from the TrainConfig
    that ``objective`` builds out of ``point`` sampled like a trial (conditional params
    dropped as a trial drops them)."""
    params = spaces.suggest(optuna.trial.FixedTrial(point), space)
    run = prepare(objective.train_config(params, seed=0), KNOB_DATA)
    loss, seen = train_epoch(run, 0)
    digest = hashlib.sha256(repr((loss, seen)).encode())
    for tensor in run.model.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("agent", AGENTS)
def test_every_knob_of_the_space_changes_what_training_does(agent, two_backbones):
    """A knob that is sampled but that nothing reads (or that the trial's TrainConfig
    drops) leaves the trained weights bit for bit the same: each one, moved alone from a
    base point to another value of its range, must change them."""
    space = spaces.agent_space(agent, two_backbones, KNOB_STAGE.epochs)
    spec = StudySpec(experiment="e", agent=agent, stage=KNOB_STAGE.to_dict(),
                     chain=(f"e.{agent}.s1",), budget=4, space=tuple(spaces.space_to_json(space)),
                     backbones=two_backbones, train_defaults={"device": "cpu"})
    objective = Objective(spec, space, study_name=spec.chain[0], worker_index=0,
                          stop=threading.Event(), settings=Settings())
    base = _base_point(space)
    before = _what_training_did(objective, space, base)
    # Training is deterministic: without this, every knob would look like it mattered.
    assert _what_training_did(objective, space, dict(base)) == before
    ignored = [(p.name, other) for p in space
               for other in [_other_value(p, base[p.name])]
               if _what_training_did(objective, space, {**base, p.name: other}) == before]
    assert ignored == []


def test_agent_spaces_cover_their_losses():
    names = {a: {p.name for p in spaces.agent_space(a, ("tiny",), 8)} for a in AGENTS}
    assert {"cls_loss", "focal_gamma", "pooling"} <= names["criteria"]
    assert "neg_ratio" in names["evidence"] and "cls_loss" not in names["evidence"]
    assert {"loss_weight", "neg_ratio", "cls_loss"} <= names["share"] == names["joint"]
    assert "backbone" not in names["criteria"]  # one backbone: nothing to search
    assert "epochs" not in {p.name for p in spaces.agent_space("criteria", ("t",), 1)}


def test_conditional_param_only_when_its_condition_holds():
    space = spaces.agent_space("criteria", ("tiny",), 8)
    samples = _sample(space, n=60)
    assert any(s["cls_loss"] == "focal" for s in samples)
    for s in samples:
        assert ("focal_gamma" in s) == (s["cls_loss"] == "focal")


def test_json_round_trip():
    space = spaces.agent_space("joint", ("a", "b"), 8)
    assert spaces.space_from_json(spaces.space_to_json(space)) == space


SPACE = (
    Param("lr", "float", 1e-5, 1e-3, log=True),
    Param("dropout", "float", 0.0, 0.3),
    Param("head_layers", "int", 1, 4),
    Param("pooling", "categorical", choices=("cls", "mean")),
    Param("schedule", "categorical", choices=("linear", "cosine", "constant")),
    Param("focal_gamma", "float", 0.5, 4.0, when=("cls_loss", "focal")),
)


def _t(lr, dropout, layers, pooling, schedule):
    return {"lr": lr, "dropout": dropout, "head_layers": layers, "pooling": pooling,
            "schedule": schedule}


FINISHED = [
    (_t(1e-4, 0.10, 2, "cls", "cosine"), 0.9),
    (_t(2e-4, 0.20, 3, "cls", "linear"), 0.8),
    (_t(1e-5, 0.00, 1, "mean", "constant"), 0.1),
    (_t(9e-4, 0.30, 4, "mean", "constant"), 0.2),
]


def test_narrow_categoricals_keep_top_k_choices_in_original_order():
    out = {p.name: p for p in narrow(SPACE, FINISHED, top_k=2, margin=0.0)}
    assert out["pooling"].choices == ("cls",)
    assert out["schedule"].choices == ("linear", "cosine")


def test_narrow_numeric_range_plus_margin_log_aware():
    out = {p.name: p for p in narrow(SPACE, FINISHED, top_k=2, margin=0.1)}
    width = math.log(1e-3) - math.log(1e-5)
    assert out["lr"].log
    assert out["lr"].low == pytest.approx(math.exp(math.log(1e-4) - 0.1 * width))
    assert out["lr"].high == pytest.approx(math.exp(math.log(2e-4) + 0.1 * width))
    assert out["dropout"].low == pytest.approx(0.07) and out["dropout"].high == pytest.approx(0.23)
    assert (out["head_layers"].low, out["head_layers"].high) == (1, 4)  # 2..3 ± 0.3 rounded out
    assert out["focal_gamma"] == SPACE[-1]  # never sampled in the top-k: unchanged


def test_narrow_clips_to_original_bounds_and_is_deterministic():
    a = narrow(SPACE, FINISHED, top_k=4, margin=0.5)
    assert a == narrow(SPACE, list(FINISHED), top_k=4, margin=0.5)
    lr = a[0]
    assert (lr.low, lr.high) == (1e-5, 1e-3)


def test_narrow_ties_keep_the_earlier_trial():
    tied = [(_t(1e-4, 0.1, 2, "cls", "cosine"), 0.5), (_t(1e-5, 0.0, 1, "mean", "linear"), 0.5)]
    out = {p.name: p for p in narrow(SPACE, tied, top_k=1, margin=0.0)}
    assert out["pooling"].choices == ("cls",) and out["lr"].low == pytest.approx(1e-4)


def test_the_learning_rate_range_follows_the_backbones():
    def lr(backbones):
        (p,) = [p for p in spaces.agent_space("criteria", backbones, epochs=8) if p.name == "lr"]
        return (p.low, p.high)

    assert lr(("tiny",)) == (3e-4, 3e-3)  # from scratch: below 3e-4 it learns nothing
    assert lr(("minilm",)) == lr(("minilm", "/models/bert-base")) == (1e-5, 1e-4)  # fine-tuning
    assert lr(("tiny", "minilm")) == (1e-5, 3e-3)  # one distribution spanning both

    def names(backbones):
        return {p.name for p in spaces.agent_space("criteria", backbones, epochs=8)}

    # a head trained from nothing on a pretrained encoder gets its own, larger rate
    assert "head_lr_multiplier" in names(("minilm",)) & names(("tiny", "minilm"))
    assert "head_lr_multiplier" not in names(("tiny",))


def test_every_agent_of_the_agent_table_has_a_search_space_and_no_other():
    from psy_agents.agents.registry import AGENT_NAMES

    assert set(spaces.AGENT_EXTRAS) == set(AGENT_NAMES)
    for agent in AGENT_NAMES:
        assert spaces.agent_space(agent, ("tiny",), 4)
