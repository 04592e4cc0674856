"""One place for settings: shared options declared once, resolved at the CLI edge, and the
worker's folders handed to it by its backend (never a path of the launcher's machine).

Real subprocesses of `launch` for the end-to-end cases; the backends' `worker_paths` and
the spec round trip are checked in-process.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from psy_agents.backends.k8s import K8sBackend
from psy_agents.backends.local import LocalBackend
from psy_agents.backends.options import K8sOptions, SlurmOptions
from psy_agents.backends.slurm import SlurmBackend
from psy_agents.cli.main import COMMANDS, cli
from psy_agents.cli.options import _DECLARED, build_settings, shared_options
from psy_agents.hpo.spec import StudySpec
from psy_agents.settings import Settings
from tests.cli.test_cli_answers import K8S_STORAGE
from tests.cli.test_cli_hpo import REPO, launch

SRC = REPO / "src" / "psy_agents"
SHARED_FLAGS = {flags[0]: kwargs["envvar"] for flags, kwargs in _DECLARED.values()}


def _declared_flags(path: Path) -> list[str]:
    """Flags declared in ``path``: string arguments of a ``click.option(...)`` call, and
    the flag tuples of a table of declarations (a tuple whose first item is ``--x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "option":
            found += [a.value for a in node.args if isinstance(a, ast.Constant)]
        elif (isinstance(node, ast.Tuple) and node.elts and isinstance(node.elts[0], ast.Constant)
              and str(node.elts[0].value).startswith("--")):
            found.append(node.elts[0].value)
    return found


def test_each_shared_option_is_declared_once_in_the_package():
    seen = {flag: [] for flag in SHARED_FLAGS}
    for path in SRC.rglob("*.py"):
        for flag in _declared_flags(path):
            if flag in seen:
                seen[flag].append(str(path.relative_to(SRC)))
    assert seen == {flag: ["cli/options.py"] for flag in SHARED_FLAGS}


def _help_of(command: list[str]) -> str:
    out = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


def _commands() -> list[list[str]]:
    names = [[n] for n in COMMANDS if n not in ("data", "bench")]
    return names + [["data", s] for s in ("validate", "split", "stats")] + \
        [["bench", s] for s in ("train", "storage", "pruning")]


@pytest.mark.parametrize("command", _commands(), ids=" ".join)
def test_every_command_help_names_each_shared_options_env_var(command):
    # the option entries only: an example above them may use a flag too
    text = _help_of(command).split("Options:", 1)[-1]
    shown = [flag for flag in SHARED_FLAGS if re.search(rf"(^| ){flag}[ ,=]", text)]
    for flag in shown:
        # the flag's own help entry (up to the next option) names its variable
        entry = text.split(f"{flag} ", 1)[1].split(" --", 1)[0]
        if command == ["worker"] and flag == "--cache-dir":  # see the test below
            assert "not read from the environment" in entry, entry
            continue
        assert f"env: {SHARED_FLAGS[flag]}" in entry, (flag, entry)
    if command == ["hpo"]:
        assert set(shown) >= {"--storage", "--experiment", "--runs-dir", "--data-dir",
                              "--stages-file"}


@click.command()
@shared_options("storage", "runs_dir", "cache_dir")
def _probe(settings: Settings) -> None:
    click.echo(json.dumps({k: str(v) for k, v in vars(settings).items()}))


@pytest.mark.parametrize(("args", "env", "storage"), [
    ([], {}, "sqlite:///runs/optuna.db"),
    ([], {"PSY_STORAGE": "postgresql+psycopg2://h/env"}, "postgresql+psycopg2://h/env"),
    (["--storage", "sqlite:///flag.db"], {"PSY_STORAGE": "postgresql+psycopg2://h/env"},
     "sqlite:///flag.db"),
])
def test_flag_beats_environment_beats_default(args, env, storage):
    out = CliRunner().invoke(_probe, args, env={"PSY_STORAGE": None, "PSY_RUNS_DIR": "/r",
                                                "PSY_CACHE_DIR": None, **env})
    assert out.exit_code == 0, out.output
    got = json.loads(out.output)
    assert got["storage"] == storage and got["runs_dir"] == "/r" and got["cache_dir"] == "None"
    assert str(build_settings(runs_dir=Path("/r")).cache) == "/r/cache"


@pytest.mark.parametrize(("env", "message"), [
    ({"PSY_GRACE_PERIOD_S": "x"}, "error: invalid value for '--grace-period-s': 'x' is not a "
                                  "valid integer range — see 'launch worker --help'"),
    ({"PSY_HEARTBEAT_INTERVAL_S": "10", "PSY_GRACE_PERIOD_S": "5"},
     "error: heartbeat interval 10 s and grace period 5 s are inconsistent — use an "
     "interval >= 1 s and a grace period longer than the interval"),
])
def test_worker_heartbeat_settings_from_its_environment_are_checked(tmp_path, env, message):
    out = launch(["worker", "--study", "x.criteria.s1", "--index", "0"], cwd=tmp_path,
                 env={"PSY_STORAGE": f"sqlite:///{tmp_path}/o.db", **env})
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "o.db").exists()


def test_a_worker_never_takes_the_launchers_cache_dir_from_its_environment():
    """A Slurm task inherits the submitting shell's environment: PSY_CACHE_DIR there is a
    folder of the launcher's machine, so `launch worker` does not read it."""
    from psy_agents.cli.worker import worker

    (cache,) = [p for p in worker.params if p.name == "cache_dir"]
    assert cache.envvar is None
    (runs,) = [p for p in worker.params if p.name == "runs_dir"]
    assert runs.envvar == "PSY_RUNS_DIR"  # overridden by the --runs-dir its backend writes


def test_k8s_with_a_local_sqlite_storage_is_refused_before_anything_is_made(tmp_path):
    out = launch(["hpo", "--agent", "joint", "--backend", "k8s"], cwd=tmp_path,
                 env={"PSY_LAUNCH_DIR": str(tmp_path / "none")})
    assert out.returncode == 2
    assert out.stderr == ("error: --backend k8s with the SQLite storage "
                          f"sqlite:///{tmp_path}/runs/optuna.db: the pods cannot reach a file "
                          "on this machine, and they read the URL from the Secret — pass "
                          "--storage (or PSY_STORAGE) with the PostgreSQL URL the Secret "
                          "holds\n")
    assert list(tmp_path.iterdir()) == []


def test_hpo_honours_psy_runs_dir_where_status_and_cancel_look(tmp_path):
    """`launch hpo`, `launch status` and `launch cancel` with only PSY_RUNS_DIR set agree
    on where the campaign's files are, and nothing lands in ./runs."""
    elsewhere, work = tmp_path / "scratch" / "runs", tmp_path / "work"
    work.mkdir()
    env = {"PSY_RUNS_DIR": str(elsewhere), "PSY_STORAGE": f"sqlite:///{tmp_path}/o.db"}
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
                  "--trials", "2", "--epochs", "1", "--experiment", "rd"], cwd=work, env=env)
    assert out.returncode == 0, out.stderr
    handle = json.loads((elsewhere / "rd" / "backend.json").read_text())
    assert handle["backend"] == "local"
    assert sorted(p.name for p in (elsewhere / "rd" / "logs").glob("worker-*.log")) == \
        ["worker-0.log"]
    # the worker was told the same folder: its checkpoints were there (deleted as each
    # trial ended, the study's folder stays)
    assert (elsewhere / "rd" / "checkpoints" / "rd.criteria.s1").is_dir()
    assert not (work / "runs").exists()
    status = launch(["status", "--experiment", "rd"], cwd=work, env=env)
    assert status.returncode == 0, status.stderr
    assert f"workers: local job {handle['job_id']} — succeeded 0" in status.stdout
    cancel = launch(["cancel", "--experiment", "rd"], cwd=work, env=env)
    assert cancel.returncode == 0, cancel.stderr
    assert cancel.stdout == "nothing to cancel: the local workers of rd (launch 1) have exited\n"
    # without it, they look in ./runs and say so in one line
    lost = launch(["cancel", "--experiment", "rd"], cwd=work,
                  env={"PSY_STORAGE": env["PSY_STORAGE"]})
    assert lost.returncode == 2
    assert lost.stderr.startswith("error: runs/rd/backend.json: no workers were recorded")


def test_backends_tell_workers_their_own_folders(tmp_path):
    data, runs = tmp_path / "d", tmp_path / "r"
    assert LocalBackend().worker_paths(Path("d"), Path("r")) == (
        str(Path("d").resolve()), str(Path("r").resolve()))
    assert SlurmBackend().worker_paths(data, runs) == (str(data), str(runs))
    shared = SlurmOptions(data_dir="/project/redsm5", runs_dir="/scratch/runs")
    assert SlurmBackend(shared).worker_paths(data, runs) == ("/project/redsm5", "/scratch/runs")
    assert K8sBackend().worker_paths(data, runs) == ("/data", "/checkpoints")
    no_volume = K8sOptions(pvc_name=None, data_dir="/app/data")
    assert K8sBackend(no_volume).worker_paths(data, runs) == ("/app/data", "runs")


def test_k8s_dry_run_holds_no_path_of_the_launchers_machine(tmp_path):
    out = launch(["hpo", "--agent", "joint", "--workers", "2", "--backend", "k8s",
                  "--experiment", "kp", "--dry-run"], cwd=tmp_path,
                 env={"PSY_RUNS_DIR": str(tmp_path / "runs"), "PSY_STORAGE": K8S_STORAGE})
    assert out.returncode == 0, out.stderr
    assert str(tmp_path) not in out.stdout and str(REPO) not in out.stdout
    assert "- --data-dir\n        - /data\n        - --runs-dir\n        - /checkpoints\n" \
        in out.stdout


def test_a_study_spec_holds_no_path_and_reads_specs_that_did():
    spec = StudySpec(experiment="e", agent="criteria", stage={"name": "s1"},
                     chain=("e.criteria.s1",), budget=1)
    stored = spec.to_json()
    assert not {"data_dir", "runs_dir"} & set(stored)
    legacy = {**stored, "data_dir": "/home/alice/data", "runs_dir": "/home/alice/runs"}
    assert StudySpec.from_json(legacy) == spec


def test_the_launcher_and_a_simulated_worker_never_import_torch():
    import subprocess
    import sys

    code = ("import sys, psy_agents.cli.hpo, psy_agents.cli.worker, psy_agents.hpo.worker; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
