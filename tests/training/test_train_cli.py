"""Bad input to `launch train` ends in one clear line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _launch(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "psy_agents.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "params", "message"), [
    (["--agent", "critera"], None, "error: unknown agent 'critera' — use one of: criteria"),
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
