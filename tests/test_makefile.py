"""The Makefile: `setup`, `test`, `lint`, `demo` run the commands the README promises
(`make -n` into a throwaway venv path), and each wrapper prints exactly the `launch` line it
documents, passes the variables through (no flag for an empty TRIALS/EPOCHS), and a small
one really runs.

The replaced project's Makefile passed flags its scripts rejected; here every printed line
is also parsed by the real `launch` CLI (`--dry-run`, or click's own parser for train/eval),
so a wrapper cannot drift from it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import click
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


def parse_with_launch(argv: list[str]) -> dict:
    """The params the real `launch` CLI parses from ``argv`` (raises click.UsageError on an
    unknown flag or a bad value), without running the command."""
    from psy_agents.cli.main import cli

    assert argv[0].endswith("/bin/launch"), argv
    command = cli.get_command(click.Context(cli), argv[1])
    assert command is not None, f"launch has no command {argv[1]!r}"
    return command.make_context(argv[1], argv[2:]).params


def test_train_and_eval_lines_are_parsed_by_launch():
    params = parse_with_launch(printed("train", "AGENT=share", "EPOCHS=2", "EXTRA=--seed 3"))
    assert (params["agent"], params["epochs"], params["seed"]) == ("share", 2, 3)
    params = parse_with_launch(printed("eval", "MODEL=runs/x/model", "SPLIT=test"))
    assert (params["model_dir"], params["split"]) == (Path("runs/x/model"), "test")
    assert parse_with_launch(printed("eval", "AGENT=evidence"))["model_dir"] == Path(
        "runs/train/evidence/model")


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


# ---- setup / test / lint / demo ----------------------------------------------------------
# Run against a venv path that does not exist, so `make -n` always shows the install steps.


def planned(target: str, venv: Path, *variables: str) -> list[str]:
    out = make("-n", target, f"VENV={venv}", *variables)
    assert out.returncode == 0, out.stderr
    return [line.rstrip() for line in out.stdout.splitlines()]


def setup_lines(venv: Path) -> list[str]:
    # torch first, so pip takes the CPU build instead of resolving a CUDA one (README).
    return [f"{os.environ.get('PYTHON', 'python3')} -m venv {venv}",
            f"{venv}/bin/pip install -q --upgrade pip",
            f"{venv}/bin/pip install -q torch==2.13.0",
            f'{venv}/bin/pip install -q -e ".[test]"',
            f"touch {venv}/.installed"]


def test_setup_creates_the_venv_torch_first(tmp_path):
    venv = tmp_path / "venv"
    assert planned("setup", venv) == setup_lines(venv)


def test_test_target_starts_the_services_then_runs_pytest(tmp_path):
    venv = tmp_path / "venv"
    assert planned("test", venv) == [*setup_lines(venv), "bash .ci/services-up.sh",
                                     f"{venv}/bin/pytest"]
    services = (REPO / ".ci" / "services-up.sh").read_text()
    assert "pg_ctlcluster" in services and "slurm-up.sh" in services and "chromium" in services


def test_readme_test_commands_are_what_make_test_and_ci_run(tmp_path):
    venv = tmp_path / "venv"
    readme = [line.split("#")[0].strip() for line in (REPO / "README.md").read_text().splitlines()]
    commands = [shlex.split(line) for line in readme if line.startswith("make test")]
    assert ["make", "test"] in commands and len(commands) >= 2, commands
    for argv in commands:  # e.g. make test PYTEST_ARGS="tests/data"
        variables = argv[2:]
        args = [v.split("=", 1)[1] for v in variables if v.startswith("PYTEST_ARGS=")]
        assert planned("test", venv, *variables)[-1] == " ".join([f"{venv}/bin/pytest", *args])
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == "make test" and not [line for line in ci if "pytest" in line]


def test_lint_runs_ruff_over_the_tree(tmp_path):
    venv = tmp_path / "venv"
    assert planned("lint", venv) == [*setup_lines(venv), f"{venv}/bin/ruff check ."]


def test_demo_validates_the_sample_then_runs_the_chain_and_launch_accepts_it(tmp_path):
    venv = tmp_path / "venv"
    lines = planned("demo", venv)
    assert lines[:5] == setup_lines(venv)
    launch_bin = f"{venv}/bin/launch"
    assert lines[5:] == [
        f"{launch_bin} data validate --data-dir data/sample",
        f"{launch_bin} hpo --agent criteria --plan multi --trials 2 --epochs 2 --seeds 2 "
        "--experiment demo",
        f"{launch_bin} status --experiment demo"]
    real = str(REPO / LAUNCH)
    validate, hpo_line, status = ([real, *shlex.split(line)[1:]] for line in lines[5:])
    out = subprocess.run(validate, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.splitlines()[-1].startswith("summary: "), out.stderr
    out = subprocess.run([*hpo_line, "--dry-run"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={**os.environ,
                                           "PSY_DATA_DIR": str(REPO / "data" / "sample")})
    assert out.returncode == 0, out.stderr
    assert "worker --study demo.criteria.s0 --data-dir " in out.stdout
    assert f"--runs-dir {tmp_path / 'runs'} --index 0 " in out.stdout
    assert parse_with_launch(status)["experiment"] == "demo"
