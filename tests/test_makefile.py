"""The Makefile's wrappers: each prints exactly the `launch` line it documents, passes the
variables through (no flag for an empty TRIALS/EPOCHS), and a small one really runs.

The replaced project's Makefile passed flags its scripts rejected; here every printed line
is also parsed by the real `launch` CLI (`--dry-run`), so a wrapper cannot drift from it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = ".venv/bin/launch"
POOL = ["--workers", "3", "--backend", "slurm", "--experiment", "mk"]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="`make` is not installed")


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args],
                          env={**full_env, **(env or {})}, capture_output=True, text=True,
                          timeout=300)


def printed(target: str, *variables: str) -> list[str]:
    """The argv `make -n TARGET VARS...` would run (the one line that starts with launch)."""
    out = make("-n", target, *variables)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.startswith(LAUNCH)]
    assert len(lines) == 1, out.stdout
    return shlex.split(lines[0])


def hpo(agent: str, *stage: str, trials: bool = True) -> list[str]:
    return [LAUNCH, "hpo", "--agent", agent, *stage, *POOL, *(["--trials", "7"] if trials else [])]


EXPECTED = {
    "train": [LAUNCH, "train", "--agent", "joint"],
    "eval": [LAUNCH, "eval", "--model", "runs/train/joint/model", "--split", "val"],
    "hpo-s0": hpo("joint", "--stage", "s0"),
    "hpo-s1": hpo("joint", "--stage", "s1"),
    "hpo-s2": hpo("joint", "--stage", "s2"),
    "refit": hpo("joint", "--stage", "refit", trials=False),  # refit's budget is SEEDS
    "full-hpo": hpo("joint", "--plan", "multi"),
    "full-hpo-all": hpo("all", "--plan", "multi"),
    "tune-criteria-max": hpo("criteria", "--stage", "max"),
    "tune-evidence-max": hpo("evidence", "--stage", "max"),
    "tune-share-max": hpo("share", "--stage", "max"),
    "tune-joint-max": hpo("joint", "--stage", "max"),
    "maximal-hpo-all": hpo("all", "--stage", "max"),
}
VARS = ("AGENT=joint", "WORKERS=3", "BACKEND=slurm", "TRIALS=7", "EXPERIMENT=mk")


@pytest.mark.parametrize("target", sorted(EXPECTED))
def test_target_prints_its_launch_line(target):
    assert printed(target, *VARS) == EXPECTED[target]


def test_empty_trials_and_epochs_pass_no_flag_and_set_ones_do():
    assert printed("hpo-s1") == [LAUNCH, "hpo", "--agent", "criteria", "--stage", "s1",
                                 "--workers", "1", "--backend", "local", "--experiment",
                                 "default"]
    argv = printed("hpo-s1", "TRIALS=", "EPOCHS=3", "EXTRA=--objective simulated")
    assert "--trials" not in argv and argv[-4:] == ["--epochs", "3", "--objective", "simulated"]
    assert printed("refit", "SEEDS=5", "EPOCHS=2")[-4:] == ["--seeds", "5", "--epochs", "2"]
    assert printed("train", "AGENT=share", "EPOCHS=2") == [LAUNCH, "train", "--agent", "share",
                                                           "--epochs", "2"]


def test_make_n_prints_only_the_launch_line():
    out = make("-n", "full-hpo-all", *VARS)
    assert out.stdout.strip().splitlines() == [shlex.join(EXPECTED["full-hpo-all"])]


@pytest.mark.parametrize("target", [t for t in sorted(EXPECTED) if t not in ("train", "eval")])
def test_every_hpo_line_is_accepted_by_launch(target, tmp_path):
    # The real CLI parses the printed flags; --dry-run creates nothing.
    argv = printed(target, *VARS)
    out = subprocess.run([str(REPO / argv[0]), *argv[1:], "--dry-run"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PSY_DATA_DIR": str(REPO / "data" / "sample")})
    assert out.returncode == 0, out.stderr
    assert "#SBATCH --array=0-2" in out.stdout
    assert not (tmp_path / "runs" / "optuna.db").exists()
    assert not (tmp_path / "runs" / "mk").exists()


def _finished(study) -> int:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(t.state in done for t in study.trials)


def test_make_hpo_s1_then_s2_really_run(tmp_path):
    db = tmp_path / "optuna.db"
    exp = f"mk-{uuid.uuid4().hex[:8]}"
    extra = f"EXTRA=--objective simulated --runs-dir {tmp_path / 'runs'} --storage sqlite:///{db}"
    for target in ("hpo-s1", "hpo-s2"):
        out = make(target, "AGENT=criteria", "TRIALS=2", "EPOCHS=1", f"EXPERIMENT={exp}", extra)
        assert out.returncode == 0, out.stdout + out.stderr
        name = f"{exp}.criteria.{target[4:]}"
        assert f"{name}  [####################]" in out.stdout
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
        assert _finished(study) >= 2 and all(t.state.is_finished() for t in study.trials)
    # s2 sampled the space narrowed from this experiment's s1.
    assert "psy_narrowed_space" in study.user_attrs
