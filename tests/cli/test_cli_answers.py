"""The launcher's answers to inputs that used to get misleading ones (#17): each is one line
on stderr with the exit code, and names what is wrong and what to do.

Most run the console entry point in-process (``psy_agents.cli.main.main``, the same door as
the installed ``launch``); the usage-error and eval cases also run it as a real process.
"""

from __future__ import annotations

import json
import re
import sys

import click
import pytest

from psy_agents.agents.registry import AGENT_NAMES
from psy_agents.cli import main as cli_main
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig
from psy_agents.training.calibrate import DEFAULT_METHOD
from tests.cli.test_cli_hpo import REPO, launch

# A storage the pods of a k8s dry run could reach; a dry run never connects to it.
K8S_STORAGE = "postgresql+psycopg2://psy@postgres.hpo.svc:5432/psy"
SAMPLE = REPO / "data" / "sample"


@pytest.fixture
def answer(monkeypatch, capsys, tmp_path):
    """Run ``launch ARGS`` in-process in an empty ``tmp_path`` with no PSY_* settings but a
    data folder; return (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    for name in ("PSY_STORAGE", "PSY_EXPERIMENT", "PSY_RUNS_DIR", "PSY_CACHE_DIR",
                 "PSY_STAGES", "PSY_BACKEND", "PSY_BACKEND_PROFILE", "PSY_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PSY_DATA_DIR", str(SAMPLE))
    monkeypatch.setenv("PSY_LAUNCH_DIR", str(tmp_path / "no-profiles"))

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            cli_main.main(list(args))
        out, err = capsys.readouterr()
        return exit_.value.code, out, err
    return run


def _walk(cmd: click.Command, path: tuple[str, ...]):
    """(command path, command) of every command under ``cmd``, through the lazy table."""
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            yield from _walk(cmd.get_command(ctx, name), (*path, name))
    else:
        yield path, cmd


COMMANDS = dict(_walk(cli_main.cli, ()))


# -- 1. `launch status --experiment` of an experiment the storage does not hold ----------

def _campaigns(url: str, experiments: list[str]) -> None:
    stage = StageConfig(name="s1", trials=1, epochs=1, patience=1, pruner="none")
    for experiment in experiments:
        create_campaign(url, experiment=experiment, agents=["criteria"], stages=(stage,),
                        n_workers=1, overrides=CampaignOverrides(objective="simulated"))


def test_status_of_an_experiment_the_storage_does_not_hold_lists_those_it_does(answer,
                                                                              tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    _campaigns(url, [f"e{i}" for i in range(7)])
    code, out, err = answer("status", "--storage", url, "--experiment", "nope")
    assert (code, out) == (2, "")
    assert err == (f"error: storage {url} holds no experiment 'nope'; its 7 experiment(s): "
                   "e0, e1, e2, e3, e4 and 2 more — pass one of them with --experiment, or "
                   "the storage that holds it with --storage\n")
    code, out, err = answer("status", "--storage", url, "--experiment", "e6")
    assert (code, err) == (0, "")
    assert [line.split()[0] for line in out.splitlines()] == ["e6.criteria.s1"]


def test_status_of_a_storage_without_studies_says_so(answer, tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    open_storage(url, create_schema=True)
    for experiment in ([], ["--experiment", "nope"]):
        code, out, err = answer("status", "--storage", url, *experiment)
        assert (code, out, err) == (0, "no studies yet — start one with `launch hpo`\n", "")


# -- 2, 3. a storage URL is judged once, for every command that takes --storage ----------

# The least each command that takes --storage needs to reach its storage.
STORAGE_ARGS = {
    ("status",): [], ("doctor",): [], ("dashboard",): [], ("best",): ["--study", "e.a.s"],
    ("export",): ["--study", "e.a.s", "--out", "x"], ("report",): ["--study", "e.a.s"],
    ("hpo",): ["--agent", "criteria", "--dry-run"],
    ("worker",): ["--study", "e.criteria.s1", "--index", "0"],
    ("bench", "storage"): [], ("bench", "pruning"): [],
}


def test_the_storage_args_table_has_every_command_that_takes_storage():
    takes = {path for path, cmd in COMMANDS.items() if any(p.name == "storage"
                                                            for p in cmd.params)}
    assert takes == set(STORAGE_ARGS)


@pytest.mark.parametrize("command", STORAGE_ARGS, ids=" ".join)
def test_a_server_url_without_a_database_is_refused(answer, tmp_path, command):
    url = "postgresql+psycopg2://postgres:hunter2@127.0.0.1:5432"
    code, out, err = answer(*command, *STORAGE_ARGS[command], "--storage", url)
    assert (code, out) == (2, "")
    shown = "postgresql+psycopg2://postgres:***@127.0.0.1:5432"
    assert err == (f"error: storage URL {shown} names no database: the server would pick its "
                   f"default one, with whatever studies it holds — add /DBNAME: "
                   f"{shown}/DBNAME\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", STORAGE_ARGS, ids=" ".join)
def test_a_missing_driver_is_named_with_how_to_install_it(answer, monkeypatch, tmp_path,
                                                          command):
    # Neither MySQL driver can be imported, whatever this machine has installed.
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    monkeypatch.setitem(sys.modules, "pymysql", None)
    code, out, err = answer(*command, *STORAGE_ARGS[command],
                            "--storage", "mysql://root@127.0.0.1:3306/test")
    assert (code, out) == (2, "")
    assert err == ("error: storage URL mysql://root@127.0.0.1:3306/test needs the Python "
                   "driver module MySQLdb, which is not installed — `pip install mysqlclient`, "
                   "or `pip install pymysql` and use mysql+pymysql://root@127.0.0.1:3306/test\n")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_driver_with_another_installed_names_the_installed_one(answer,
                                                                        monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    code, _, err = answer("doctor", "--storage", "postgresql+psycopg://u:pw@h:5432/d")
    assert code == 2
    assert err == ("error: storage URL postgresql+psycopg://u:***@h:5432/d needs the Python "
                   "driver module psycopg, which is not installed — use "
                   "postgresql+psycopg2://u:***@h:5432/d (psycopg2 is installed), or "
                   "`pip install 'psycopg[binary]'`\n")


# -- 4. `launch train --config <a directory>` --------------------------------------------

def test_train_config_that_is_a_directory(answer, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    code, out, err = answer("train", "--agent", "criteria", "--config", str(folder))
    assert (code, out) == (2, "")
    assert err == (f"error: --config {folder} is a directory, not a params file — pass a JSON "
                   'file of TrainConfig fields, e.g. {"lr": 1e-4, ...}\n')
    (folder / "config.json").write_text("{}")
    code, _, err = answer("train", "--agent", "criteria", "--config", str(folder))
    assert code == 2
    assert err == (f"error: --config {folder} is a directory, not a params file — pass its "
                   f"{folder}/config.json (what `launch train` wrote there)\n")


# -- 5. `launch eval` says what it scored --------------------------------------------------

def test_eval_names_the_model_the_split_and_the_posts_before_the_figures(tmp_path):
    env = {"PSY_CACHE_DIR": str(tmp_path / "cache"), "MLFLOW_TRACKING_URI": ""}
    trained = launch(["train", "--agent", "criteria", "--epochs", "1", "--limit-posts", "3",
                      "--out", "out"], cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = launch(["eval", "--model", "out/model", "--split", "test", "--limit-posts", "3"],
                 cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    first, *figures = out.stdout.splitlines()
    # 3 posts of the test split, each paired with the 9 symptoms
    assert first == (f"scored out/model (agent criteria) on the test split of {SAMPLE}: "
                     "3 posts, 27 pairs")
    interval = r"( \[\d\.\d{4}, \d\.\d{4}\])?"  # the F1s' 95 % bootstrap interval
    assert figures and all(re.fullmatch(rf"\S.* \d\.\d{{4}}{interval}", line)
                           for line in figures)
    macro = next(line for line in figures if line.startswith("symptom_macro_f1 "))
    saved = json.loads((tmp_path / "out" / "model" / "eval-test.json").read_text())
    # the baseline's figure of the same objective on the same posts closes the table
    assert figures[-1] == f"{'baseline (TF-IDF + LR)':32s} {saved['baseline']['value']:.4f}"
    assert saved["decision"] == DEFAULT_METHOD  # the thresholds chosen on val, saved with it
    # each F1 lies in its interval: with 3 posts the resample that draws each post once
    # holds 6/27 of the mass, so the central 95 % always covers it
    f1s = {k for k in saved["metrics"] if k.startswith("f1/")} | {"symptom_macro_f1"}
    assert set(saved["intervals"]) == f1s
    for key in f1s:
        low, high = saved["intervals"][key]
        assert low <= saved["metrics"][key] <= high, (key, low, high)
    low, high = saved["intervals"]["symptom_macro_f1"]
    assert macro.endswith(f" [{low:.4f}, {high:.4f}]"), macro
    assert (saved["model_dir"], saved["split"], saved["posts"]) == ("out/model", "test", 3)


# -- 6. usage errors are one line ------------------------------------------------------------

@pytest.mark.parametrize(("args", "line"), [
    (["train"], "missing option '--agent'. Choose from: criteria, evidence, share, joint — "
                "see 'launch train --help'"),
    (["train", "--agent"], "option '--agent' requires an argument — see 'launch train --help'"),
    (["eval", "--model", "m", "--split", "dev"],
     "invalid value for '--split': 'dev' is not one of 'val', 'test' — see 'launch eval --help'"),
    (["train", "--agent", "joint", "--epoch", "3"],
     "no such option '--epoch'. Did you mean '--epochs'? — see 'launch train --help'"),
    (["train", "--agent", "joint", "--epochs", "three"],
     "invalid value for '--epochs': 'three' is not a valid integer — see 'launch train --help'"),
    (["data", "split", "--xyzzy"], "no such option '--xyzzy' — see 'launch data split --help'"),
    (["nope"], "no such command 'nope' — see 'launch --help'"),
    (["--bogus"], "no such option '--bogus' — see 'launch --help'"),
    # a usage error a command raises itself goes through the same door
    (["hpo", "--agent", "joint", "--slurm-partition", "gpu", "--dry-run"],
     "--slurm-partition is a slurm option, but --backend is local; drop it or pass --backend "
     "slurm — see 'launch hpo --help'"),
])
def test_a_usage_error_is_one_error_line(answer, args, line):
    assert answer(*args) == (2, "", f"error: {line}\n")


def test_a_usage_error_of_the_installed_command_is_one_line_and_help_is_unchanged(tmp_path):
    out = launch(["train", "--agent", "planner"], cwd=tmp_path)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == ("error: invalid value for '--agent': 'planner' is not one of "
                          "'criteria', 'evidence', 'share', 'joint' — see 'launch train "
                          "--help'\n")
    helped = launch(["train", "--help"], cwd=tmp_path)
    assert (helped.returncode, helped.stderr) == (0, "")
    assert helped.stdout.startswith("Usage: launch train [OPTIONS]\n\n  Train one agent")
    bare = launch(["data"], cwd=tmp_path)  # a group without its subcommand shows its help
    assert bare.returncode == 2
    assert (bare.stdout + bare.stderr).startswith("Usage: launch data [OPTIONS] COMMAND")


# -- 7. `launch train --agent` is a choice of the registry, and --help shows defaults ------

def test_train_agent_is_a_choice_of_the_registry_and_help_shows_each_default():
    train = COMMANDS[("train",)]
    (agent,) = [p for p in train.params if p.name == "agent"]
    assert isinstance(agent.type, click.Choice)
    assert tuple(agent.type.choices) == AGENT_NAMES
    ctx = train.make_context("train", [], resilient_parsing=True)  # its context_settings
    records = {p.name: p.get_help_record(ctx) for p in train.params
               if isinstance(p, click.Option) and not p.hidden}
    no_default = {"agent", "config_path", "tracking_uri"}  # required, or nothing to show
    assert {name for name, (_, text) in records.items() if "default:" not in text} == \
        no_default
    assert "[default: --config's, else 8]" in records["epochs"][1]


# -- 8. every option read from an environment variable names it, and none other -----------

def _env_named(help_text: str) -> list[str]:
    return re.findall(r"\[env: ([A-Z][A-Z0-9_]*)[;\]]", help_text)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_each_option_names_its_environment_variable_and_only_that(path):
    for param in [*cli_main.cli.params, *COMMANDS[path].params]:
        if not isinstance(param, click.Option):
            continue
        envvar = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
        assert _env_named(param.help or "") == envvar, (path, param.opts)


def test_the_readme_settings_table_matches_the_options():
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `([A-Z_]+)` \|", (REPO / "README.md").read_text(),
                      re.MULTILINE)
    declared = {}
    for cmd in COMMANDS.values():
        for param in cmd.params:
            if isinstance(param, click.Option) and isinstance(param.envvar, str):
                declared.setdefault(param.opts[0], set()).add(param.envvar)
    assert rows and all(declared.get(flag) == {env} for flag, env in rows), (rows, declared)


# -- 9. the k8s backend refuses a SQLite storage, dry run included ------------------------

@pytest.mark.parametrize("storage", [None, "sqlite:///mine.db"])
def test_k8s_refuses_a_sqlite_storage_and_writes_nothing(answer, tmp_path, storage):
    given = ["--storage", storage] if storage else []
    code, out, err = answer("hpo", "--agent", "joint", "--backend", "k8s", *given, "--dry-run")
    path = tmp_path / ("mine.db" if storage else "runs/optuna.db")
    assert (code, out) == (2, "")
    assert err == (f"error: --backend k8s with the SQLite storage sqlite:///{path}: the pods "
                   "cannot reach a file on this machine, and they read the URL from the "
                   "Secret — pass --storage (or PSY_STORAGE) with the PostgreSQL URL the "
                   "Secret holds\n")
    assert list(tmp_path.iterdir()) == []
    code, out, _ = answer("hpo", "--agent", "joint", "--backend", "k8s", "--dry-run",
                          "--storage", K8S_STORAGE)
    assert code == 0 and "kind: Job" in out
    assert list(tmp_path.iterdir()) == []
