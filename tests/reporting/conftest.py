"""Fixtures for the reporting tests: real Optuna studies, the CLI in-process, headless Chromium.

Studies are built with Optuna itself (not `launch hpo`): the report must work on any study.
The standard study has 15 trials: 13 complete, one pruned after two epochs, one failed; every
trial reports one intermediate value per epoch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from psy_agents.cli.main import cli

STUDY = "exp.criteria.s1"
PRUNED_TRIAL, FAILED_TRIAL = 5, 7
GRAPH_DIV_RE = re.compile(r'<div id="([^"]+)" class="plotly-graph-div"')


def _objective(trial) -> float:
    import optuna

    lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
    batch = trial.suggest_categorical("batch", [8, 16, 32])
    value = 0.0
    for epoch in range(4):
        value = (epoch + 1) / 4 * (1 - abs(lr - 3e-4) * 500) + batch / 1000
        trial.report(value, epoch)
        if trial.number == PRUNED_TRIAL and epoch == 1:
            raise optuna.TrialPruned()
    if trial.number == FAILED_TRIAL:
        raise ValueError("planted failure")
    return value


def build_study(url: str, name: str = STUDY, n_trials: int = 15):
    """A maximize study with ``n_trials`` trials of the objective above; returns it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(_objective, n_trials=n_trials, catch=(ValueError,))
    return study


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture
def launch():
    """Invoke `launch ARGS...` in-process; returns click's Result (stdout and stderr apart)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return run


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        reason = "chromium not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the browser check")
        pytest.skip(reason)
    return exe


@pytest.fixture
def render(tmp_path: Path):
    """``render(html_file) -> (dom, log)``: load the page in headless Chromium, let its
    scripts run, and return the DOM after them plus Chromium's log (console messages)."""
    exe = _chromium()

    def run(page: Path) -> tuple[str, str]:
        profile = tmp_path / f"chromium-profile-{page.stem}"
        proc = subprocess.run(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout, proc.stderr

    return run
