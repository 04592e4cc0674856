"""Pretrained and saved weights load strictly: a checkpoint that lacks an encoder weight, or
has one the encoder does not know, is one clear error naming the keys — never a model with
some weights silently left at their random initialization."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from psy_agents.agents import backbones
from psy_agents.agents.backbones import load_pretrained, new_encoder
from psy_agents.errors import ModelError

MISSING = "encoder.layer.1.output.dense.weight"
EXTRA = "encoder.layer.0.attention.self.extra.weight"


def _edited_copy(source: str, out: Path, edit) -> str:
    """A copy of the backbone directory ``source`` whose weights ``edit`` changed."""
    shutil.copytree(source, out)
    state = load_file(out / "model.safetensors")
    edit(state)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    return str(out)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop(MISSING), f"does not match the model's weights: 1 missing ({MISSING})"),
    (lambda s: s.update({EXTRA: torch.zeros(2)}),
     f"does not match the model's weights: 1 unexpected ({EXTRA})"),
], ids=["missing", "unexpected"])
def test_launch_train_refuses_a_backbone_whose_weights_do_not_match(
        edit, message, hand_tiny, tmp_path, sample_dir, repo_root):
    backbone = _edited_copy(hand_tiny, tmp_path / "backbone", edit)
    proc = subprocess.run(
        [sys.executable, "-m", "psy_agents.cli.main", "train", "--agent", "criteria",
         "--backbone", backbone, "--epochs", "1", "--limit-posts", "4", "--data-dir",
         str(sample_dir), "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
        cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line == (f"error: backbone {backbone} {message} — point --backbone at a complete "
                    "Hugging Face model directory (config.json and its weights, as "
                    "save_pretrained writes them)")


def test_many_mismatched_keys_are_counted_and_the_first_few_named(hand_tiny, tmp_path):
    layer1 = [k for k in load_file(Path(hand_tiny) / "model.safetensors")
              if k.startswith("encoder.layer.1.")]
    backbone = _edited_copy(hand_tiny, tmp_path / "b",
                            lambda s: [s.pop(k) for k in layer1])
    first = ", ".join(sorted(layer1)[:3])
    with pytest.raises(ModelError, match=rf"{len(layer1)} missing \({first}, \.\.\.\) — "):
        load_pretrained(backbone)


def test_a_pretraining_head_and_a_missing_pooler_are_not_encoder_weights(hand_tiny, tmp_path):
    def edit(state):
        for key in [k for k in state if k.startswith("pooler.")]:
            state.pop(key)
        state["cls.predictions.bias"] = torch.zeros(3)  # BERT's masked-LM head

    config, state = load_pretrained(_edited_copy(hand_tiny, tmp_path / "b", edit))
    assert "cls.predictions.bias" not in state and "pooler.dense.weight" in state
    reference = load_pretrained(hand_tiny)[1]
    assert all(torch.equal(state[k], v) for k, v in reference.items() if "pooler" not in k)


def test_new_encoder_refuses_weights_of_another_shape_of_model(hand_tiny, monkeypatch):
    config, state = load_pretrained(hand_tiny)
    partial = {k: v for k, v in state.items() if k != MISSING}
    monkeypatch.setattr(backbones, "load_pretrained", lambda source: (config, partial))
    with pytest.raises(ModelError, match=rf"^backbone x does not match the model's weights: "
                                         rf"1 missing \({MISSING}\) — "):
        new_encoder("x", dropout=0.0)


def test_load_model_refuses_heads_of_another_agent(hand_tiny, tmp_path):
    from psy_agents.agents.backbones import load_tokenizer
    from psy_agents.agents.registry import get_agent
    from psy_agents.training.checkpoint import load_model, save_model
    from psy_agents.training.config import TrainConfig

    cfg = TrainConfig(agent="criteria", backbone=hand_tiny, max_length=64, stride=16)
    model = get_agent("criteria").build_model(cfg, hand_tiny)
    save_model(tmp_path / "model", model, load_tokenizer(hand_tiny), cfg.to_dict())
    assert load_model(tmp_path / "model")[1] == cfg  # a model as saved loads
    heads = torch.load(tmp_path / "model" / "heads.pt")
    heads["span_head.weight"] = torch.zeros(2)
    torch.save(heads, tmp_path / "model" / "heads.pt")
    with pytest.raises(ModelError, match=r"heads.pt \(agent criteria\) does not match the "
                                         r"model's weights: 1 unexpected \(span_head.weight\)"):
        load_model(tmp_path / "model")
