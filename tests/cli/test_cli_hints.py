"""Every `error:` hint names flags that exist on the command that would take them.

Each row of ``ROWS`` is a bad input to one command. It runs through the console entry point
in-process (``psy_agents.cli.main.main``), and the test asserts: exit code 2, exactly one
line on stderr, starting with ``error:``; and every ``--flag`` in that line exists. A flag
inside a backticked ```launch CMD ...``` belongs to CMD (checked against CMD's click
params, and CMD must exist); a flag inside a backticked command of another program
(```optuna ...```) is not ours and is skipped; any other flag belongs to the invoked
command. A ``PSY_*`` variable named bare must be the envvar of one of its params.

Seen once: `launch data stats --splits notjson.txt` said "pass --force", a flag only
`data split` has.

What is covered, statically: every call in src/ that constructs an error (a class whose
name ends in Error, or click's UsageError/BadParameter) with a string literal (or a module
constant) naming a ``--flag`` is a *hint site*. The error each row shows records the site
that constructed it, and ``test_every_hint_site_is_reached`` fails when a site is neither
reached by a row nor listed in ``ELSEWHERE`` with the reason and the commands whose flags
its text names (those flags are then checked statically). So a new hint is checked or
listed, never silently skipped. Not covered by the static scan: a hint assembled outside an
error call and passed in (``rewrite_hint``, ``split_command`` in data/prepare.py, a quirk's
``fix`` in data/validate.py); rows reach each of those (``stats-splits-*``,
``train-stale-splits``, ``split-strict``).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

import psy_agents
from psy_agents.cli import main as cli_main
from psy_agents.errors import PsyAgentsError
from tests.conftest import PG_ADMIN

SRC = Path(psy_agents.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
ENV = re.compile(r"\bPSY_[A-Z_]+\b")
TICKED = re.compile(r"`([^`]*)`")
CSV_FILES = ("redsm5_posts.csv", "redsm5_annotations.csv", "manifest.json")
CLEAR_ENV = ("PSY_STORAGE", "PSY_EXPERIMENT", "PSY_RUNS_DIR", "PSY_DATA_DIR", "PSY_STAGES",
             "PSY_CACHE_DIR", "MLFLOW_TRACKING_URI", "PSY_WORKERS_PER_GPU", "KUBECONFIG",
             "PSY_DEBUG")


# --- the commands and their flags -------------------------------------------------------

def command_at(path: list[str]) -> click.Command:
    """The click command at ``path`` (e.g. ``["data", "split"]``); KeyError if none."""
    cmd: click.Command = cli_main.cli
    for name in path:
        assert isinstance(cmd, click.Group), f"{' '.join(path)}: {cmd.name} has no subcommands"
        sub = cmd.get_command(click.Context(cmd), name)
        if sub is None:
            raise KeyError(f"`launch {' '.join(path)}`: no such command")
        cmd = sub
    return cmd


def flags_of(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def envvars_of(cmd: click.Command) -> set[str]:
    out: set[str] = set()
    for p in cmd.params:
        env = getattr(p, "envvar", None)
        out |= {env} if isinstance(env, str) else set(env or ())
    return out


def command_path(words: list[str]) -> list[str]:
    """The longest prefix of ``words`` that names a command (``data split --out F`` ->
    ``["data", "split"]``)."""
    path: list[str] = []
    cmd: click.Command = cli_main.cli
    for word in words:
        if not isinstance(cmd, click.Group) or word.startswith("-"):
            break
        sub = cmd.get_command(click.Context(cmd), word)
        if sub is None:
            break
        path.append(word)
        cmd = sub
    return path


def unknown_flags(line: str, invoked: list[str]) -> list[str]:
    """Each flag (or PSY_* variable) that ``line`` names but no command it names has."""
    bad: list[str] = []
    rest = line
    for segment in TICKED.findall(line):
        rest = rest.replace(f"`{segment}`", " ")
        words = segment.split()
        if not words or words[0] != "launch":
            continue  # another program's command line (optuna, kubectl)
        path = command_path(words[1:])
        named = [command_at(path)]
        after = words[len(path) + 1:len(path) + 2]
        if after == ["..."] and isinstance(named[0], click.Group):  # any subcommand: each
            named = [command_at([*path, sub]) for sub in named[0].list_commands(
                click.Context(named[0]))]
        elif after and not after[0].startswith("-") and isinstance(named[0], click.Group):
            bad.append(f"`{segment}`: no such command")
            continue
        bad += [f"{f} (of `launch {' '.join(path)}`)" for f in FLAG.findall(segment)
                if any(f not in flags_of(cmd) for cmd in named)]
    cmd = command_at(invoked)
    bad += [f"{f} (of `launch {' '.join(invoked)}`)" for f in FLAG.findall(rest)
            if f not in flags_of(cmd)]
    bad += [f"{v} (no option of `launch {' '.join(invoked)}` reads it)"
            for v in ENV.findall(rest) if v not in envvars_of(cmd)]
    return bad


def test_the_walk_catches_a_flag_the_command_lacks():
    """The checker itself: the hint that was wrong before, and a right one."""
    assert unknown_flags("error: x — delete x or pass --force to rewrite it",
                         ["data", "stats"]) == ["--force (of `launch data stats`)"]
    assert unknown_flags("error: x — rewrite it with `launch data split --out x --force`",
                         ["data", "stats"]) == []
    assert unknown_flags("error: x — run `launch data splat --out x`", ["data", "stats"]) == [
        "`launch data splat --out x`: no such command"]
    assert unknown_flags("error: x — set PSY_RUNS_DIR", ["data", "stats"]) == [
        "PSY_RUNS_DIR (no option of `launch data stats` reads it)"]


# --- hint sites in src/ -------------------------------------------------------------------

ERROR_CALLS = re.compile(r"(Error|UsageError|BadParameter|RunFailed)$")


@functools.cache
def hint_sites() -> dict[tuple[str, str], tuple[list[tuple[int, int]], list[str]]]:
    """``(module, function) -> (line ranges of its error calls, flags their text names)``
    for every error construction in src/ whose literal text names a ``--flag``."""
    sites: dict[tuple[str, str], tuple[list[tuple[int, int]], list[str]]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                     and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                     for t in n.targets if isinstance(t, ast.Name)}
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                func = getattr(node, "func", None)
                name = getattr(func, "attr", None) or getattr(func, "id", "")
                if not isinstance(node, ast.Call) or not ERROR_CALLS.search(name):
                    continue
                texts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
                         and isinstance(n.value, str)]
                texts += [constants[n.id] for n in ast.walk(node)
                          if isinstance(n, ast.Name) and n.id in constants]
                flags = sorted({f for t in texts for f in FLAG.findall(t)})
                if flags:
                    key = (str(path.relative_to(SRC)), fn.name)
                    ranges, known = sites.setdefault(key, ([], []))
                    ranges.append((node.lineno, node.end_lineno or node.lineno))
                    known[:] = sorted({*known, *flags})
    return sites


# --- running a row ------------------------------------------------------------------------

class Outcome:
    def __init__(self, code: int, err: str, site: tuple[str, int] | None) -> None:
        self.code, self.err, self.site = code, err, site


def _site_of_construction() -> tuple[str, int] | None:
    """Where in src/ the error being constructed is constructed (file, line)."""
    frame = sys._getframe(2)
    while frame is not None:
        file = frame.f_code.co_filename
        inside = file.startswith(str(SRC))
        if frame.f_code.co_name != "__init__" and not file.startswith(
                str(Path(click.__file__).parent)) and not file.endswith("errors.py"):
            return (str(Path(file).relative_to(SRC)), frame.f_lineno) if inside else None
        frame = frame.f_back
    return None


def run_launch(argv: list[str], env: dict[str, str | None]) -> Outcome:
    """``launch ARGV`` in-process; the site that built the error it showed, if any."""
    shown: list[BaseException] = []
    real_main = cli_main.cli.main

    def record(*args, **kwargs):
        try:
            return real_main(*args, **kwargs)
        except BaseException as exc:
            shown.append(exc)
            raise

    def mark(init):
        def wrapped(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if not hasattr(self, "_hint_site"):
                self._hint_site = _site_of_construction()
        return wrapped

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            if value is None:
                mp.delenv(name, raising=False)
            else:
                mp.setenv(name, value)
        mp.setattr(cli_main.cli, "main", record)
        mp.setattr(PsyAgentsError, "__init__", mark(PsyAgentsError.__init__))
        mp.setattr(click.ClickException, "__init__", mark(click.ClickException.__init__))
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                cli_main.main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    exc = shown[-1] if shown else None
    # The one door (cli/main.py) wraps what it shows; the hint was built where its cause was.
    while exc is not None and exc.__cause__ is not None and getattr(
            exc, "_hint_site", ("cli/main.py", 0))[0] == "cli/main.py":
        exc = exc.__cause__
    return Outcome(code, err.getvalue(), getattr(exc, "_hint_site", None))


# --- the rows -----------------------------------------------------------------------------

class World:
    """A fresh working folder per row: ``data`` (the sample CSV files, no splits file),
    ``db`` (a SQLite storage holding experiment `h`: study h.criteria.s1 as `launch hpo
    --stage s1 --objective simulated --trials 3` makes it, no trial run) and ``pg`` (the
    test server's URL, for the k8s and Slurm rows, which refuse SQLite and fail before
    any study is created)."""

    def __init__(self, root: Path, sample: Path, db: str) -> None:
        self.root, self.db = root, db
        self.data = root / "data"
        self.data.mkdir()
        for name in CSV_FILES:
            shutil.copy(sample / name, self.data / name)
        self.pg = PG_ADMIN.replace("postgresql://", "postgresql+psycopg2://", 1)

    def file(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text, encoding="utf-8")
        return path

    def splits(self, name: str, *args: str) -> Path:
        """A real splits file of ``data`` written by ``launch data split ARGS``."""
        out = self.root / name
        done = run_launch(["data", "split", "--data-dir", str(self.data), "--out", str(out),
                           *args], {})
        assert done.code == 0, done.err
        return out

    def kubeconfig(self) -> Path:
        return self.file("kubeconfig", json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "here",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "users": [{"name": "u", "user": {"token": "x"}}],
            "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}]}))


Row = tuple[str, Callable[[World], list[str]], dict[str, str]]
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}
HPO = ["hpo", "--agent", "criteria"]
PLAN = ["plan", "--agent", "criteria", "--workers", "1"]

ROWS: list[Row] = [
    # data
    ("data-dir-missing", lambda w: ["data", "validate", "--data-dir", str(w.root / "nope")], {}),
    ("data-file-missing", lambda w: [
        "data", "validate", "--data-dir", str((w.data / "redsm5_posts.csv").unlink() or w.data)],
     {}),
    ("split-ratios-count", lambda w: ["data", "split", "--data-dir", str(w.data),
                                      "--ratios", "0.5,0.5"], {}),
    ("split-ratios-zero", lambda w: ["data", "split", "--data-dir", str(w.data),
                                     "--ratios", "0.7,0.3,0"], {}),
    ("split-ratios-sum", lambda w: ["data", "split", "--data-dir", str(w.data),
                                    "--ratios", "0.7,0.2,0.2"], {}),
    ("split-ratios-text", lambda w: ["data", "stats", "--data-dir", str(w.data),
                                     "--ratios", "a,b,c"], {}),
    ("split-strict", lambda w: ["data", "split", "--data-dir", str(w.data), "--strict"], {}),
    ("split-bad-json", lambda w: ["data", "split", "--data-dir", str(w.data), "--out",
                                  str(w.file("s.json", "{not json"))], {}),
    ("split-mismatch", lambda w: ["data", "split", "--data-dir", str(w.data), "--out",
                                  str(w.splits("s.json", "--seed", "5"))], {}),
    ("stats-splits-missing", lambda w: ["data", "stats", "--data-dir", str(w.data),
                                        "--splits", str(w.root / "missing.json")], {}),
    ("stats-splits-bad-json", lambda w: ["data", "stats", "--data-dir", str(w.data),
                                         "--splits", str(w.file("nj.txt", "notjson"))], {}),
    ("stats-splits-mismatch", lambda w: ["data", "stats", "--data-dir", str(w.data),
                                         "--splits", str(w.splits("s.json", "--seed", "5"))],
     {}),
    ("synth-exists", lambda w: ["data", "synth", "--out", str(w.data)], {}),
    # train / eval
    ("train-stale-splits", lambda w: [
        "train", "--agent", "criteria", "--data-dir",
        str(w.splits("s.json", "--seed", "5").rename(w.data / "splits-13.json").parent)], {}),
    ("train-config-missing", lambda w: ["train", "--agent", "criteria", "--config",
                                        str(w.root / "nope.json")], {}),
    ("train-config-dir", lambda w: ["train", "--agent", "criteria", "--config", str(w.root)],
     {}),
    ("train-backbone-no-dir", lambda w: ["train", "--agent", "criteria", "--backbone",
                                         "./no-such-model"], {}),
    ("train-backbone-no-config", lambda w: ["train", "--agent", "criteria", "--backbone",
                                            str(w.data)], {}),
    ("eval-no-model", lambda w: ["eval", "--model", str(w.root / "nope")], {}),
    ("baseline-no-data", lambda w: ["baseline", "--data-dir", str(w.root / "nope")], {}),
    ("baseline-unwritable", lambda w: ["baseline", "--data-dir", str(w.data), "--out",
                                       "/proc/no/b.json"], {}),
    # hpo
    ("hpo-stage-and-plan", lambda w: [*HPO, "--plan", "multi", "--stage", "s1"], {}),
    ("hpo-fix-not-kv", lambda w: [*HPO, "--fix", "dropout", "--dry-run"], {}),
    ("hpo-fix-range", lambda w: [*HPO, "--fix", "dropout=5", "--dry-run"], {}),
    ("hpo-two-gpus", lambda w: [*HPO, "--gpus-per-worker", "2", "--dry-run"], {}),
    ("hpo-no-gpu", lambda w: [*HPO, "--gpus-per-worker", "1", "--dry-run",
                              "--data-dir", str(w.data)], NO_GPU),
    ("hpo-slots", lambda w: [*HPO, "--gpus-per-worker", "1", "--workers", "2",
                             "--workers-per-gpu", "2", "--dry-run", "--data-dir", str(w.data)],
     {"CUDA_VISIBLE_DEVICES": "0"}),
    ("hpo-no-data", lambda w: [*HPO, "--dry-run", "--data-dir", str(w.root / "nope")], {}),
    ("hpo-foreign-flag", lambda w: [*HPO, "--slurm-partition", "gpu", "--dry-run"], {}),
    ("hpo-k8s-sqlite", lambda w: [*HPO, "--backend", "k8s", "--data-dir", str(w.data),
                                  "--storage", w.db, "--gpus-per-worker", "0"], {}),
    ("hpo-k8s-bad-name", lambda w: [*HPO, "--backend", "k8s", "--experiment", "___",
                                    "--dry-run", "--data-dir", str(w.data), "--storage", w.pg],
     {}),
    ("hpo-k8s-kubeconfig", lambda w: [*HPO, "--backend", "k8s", "--data-dir", str(w.data),
                                      "--storage", w.pg, "--k8s-kubeconfig",
                                      str(w.root / "nope")], {}),
    ("hpo-k8s-no-config", lambda w: [*HPO, "--backend", "k8s", "--data-dir", str(w.data),
                                     "--storage", w.pg], {"HOME": "/nonexistent"}),
    ("hpo-k8s-context", lambda w: [*HPO, "--backend", "k8s", "--data-dir", str(w.data),
                                   "--storage", w.pg, "--k8s-kubeconfig", str(w.kubeconfig()),
                                   "--k8s-context", "elsewhere"], {}),
    ("hpo-slurm-missing", lambda w: [*HPO, "--backend", "slurm", "--data-dir", str(w.data),
                                     "--storage", w.pg], {"PATH": "/nonexistent"}),
    ("hpo-no-source-stage", lambda w: [*HPO, "--stage", "s2", "--objective", "simulated",
                                       "--storage", f"sqlite:///{w.root / 'new.db'}"], {}),
    ("hpo-lower-budget", lambda w: [*HPO, "--stage", "s1", "--objective", "simulated",
                                    "--experiment", "h", "--storage", w.db, "--trials", "1"],
     {}),
    ("hpo-other-settings", lambda w: [*HPO, "--stage", "s1", "--objective", "simulated",
                                      "--experiment", "h", "--storage", w.db, "--epochs", "7"],
     {}),
    # storage readers
    ("status-unknown-experiment", lambda w: ["status", "--experiment", "nope",
                                             "--storage", w.db], {}),
    ("status-no-file", lambda w: ["status", "--storage", "sqlite:///nope.db"], {}),
    ("status-unreachable", lambda w: ["status", "--storage",
                                      "postgresql+psycopg2://postgres@127.0.0.1:1/x"], {}),
    ("best-unknown-study", lambda w: ["best", "--study", "h.nope.s1", "--storage", w.db], {}),
    ("best-no-trial", lambda w: ["best", "--study", "h.criteria.s1", "--storage", w.db], {}),
    ("export-no-models", lambda w: ["export", "--study", "h.criteria.s1", "--storage", w.db,
                                    "--out", str(w.root / "o"), "--models",
                                    str(w.root / "m")], {}),
    ("report-unknown-study", lambda w: ["report", "--study", "h.nope.s1", "--storage", w.db],
     {}),
    ("report-unwritable", lambda w: ["report", "--study", "h.criteria.s1", "--storage", w.db,
                                     "--out", "/proc/no/r.html"], {}),
    ("dashboard-bind", lambda w: ["dashboard", "--storage", w.db, "--host", "203.0.113.7"],
     {}),
    ("doctor-bad-url", lambda w: ["doctor", "--storage", "notaurl"], {}),
    ("cancel-nothing-recorded", lambda w: ["cancel", "--experiment", "nope"], {}),
    ("worker-procs-and-share", lambda w: ["worker", "--study", "h.criteria.s1", "--index", "0",
                                          "--procs", "2", "--gpu-share", "2",
                                          "--storage", w.db], {}),
    ("worker-no-storage", lambda w: ["worker", "--study", "h.criteria.s1", "--index", "0",
                                     "--storage", "sqlite:///nope.db"], {}),
    # plan / bench
    ("plan-no-epoch-figure", lambda w: [*PLAN, "--backbone", "tiny"], {}),
    ("plan-bad-epoch-seconds", lambda w: [*PLAN, "--backbone", "tiny", "--epoch-seconds",
                                          "criteria"], {}),
    ("plan-not-bench-file", lambda w: [*PLAN, "--backbone", "tiny", "--from-bench",
                                       str(w.file("b.json", "{}"))], {}),
    ("plan-bad-backbone", lambda w: [*PLAN, "--epoch-seconds", "criteria=1", "--backbone",
                                     str(w.root / "nope")], {}),
    ("bench-storage-growth", lambda w: ["bench", "storage", "--growth", "x"], {}),
]

# Hint sites no row reaches: (module, function) -> (the commands whose flags the text names,
# why no row here, and where it is tested).
ELSEWHERE: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("backends/base.py", "__post_init__"): (
        ("hpo",), "click's IntRange(min=1) refuses --workers/--workers-per-gpu 0 first"),
    ("bench/gpu_share.py", "_expect"): (
        ("bench train",), "needs GPU measurements; tests/bench"),
    ("cli/hpo_checks.py", "check_outcome"): (
        ("hpo", "export"), "exit 1 after a search failed; tests/cli/test_cli_hpo_truth.py"),
    ("agents/backbones.py", "_missing"): (
        ("train",), "needs a model load (torch); tests/training/test_train_cli.py"),
    ("agents/backbones.py", "load_pretrained"): (
        ("train",), "needs a backbone folder whose weights do not match; "
        "tests/agents/test_agents_strict_load.py"),
    ("cli/bench.py", "bench_train"): (
        ("bench train",), "a usage error of a benchmark that loads torch; tests/bench"),
    ("hpo/warm.py", "plan"): (
        ("hpo",), "--warm-start needs an earlier campaign in the storage; exact lines in "
        "tests/cli/test_cli_warm_start.py"),
    ("hpo/warm.py", "_configs"): (
        ("hpo",), "a value that cannot be projected needs an earlier finished campaign; "
        "tests/cli/test_cli_warm_start.py"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, sample_dir: Path) -> dict[str, tuple[list[str], Outcome]]:
    """Every row run once, each in its own folder (cwd)."""
    from psy_agents.hpo.spec import CampaignOverrides, create_campaign
    from psy_agents.hpo.stages import load_stages

    base = tmp_path_factory.mktemp("hints")
    db = f"sqlite:///{base / 'optuna.db'}"
    create_campaign(db, experiment="h", agents=["criteria"], stages=load_stages(["s1"]),
                    n_workers=1, overrides=CampaignOverrides(objective="simulated", trials=3))
    done: dict[str, tuple[list[str], Outcome]] = {}
    for name, build, env in ROWS:
        root = base / name
        root.mkdir()
        cwd = Path.cwd()
        os.chdir(root)
        try:
            argv = build(World(root, sample_dir, db))
            done[name] = (argv, run_launch(argv, {**dict.fromkeys(CLEAR_ENV), **env}))
        finally:
            os.chdir(cwd)
    return done


@pytest.mark.parametrize("name", [row[0] for row in ROWS])
def test_error_hint_names_only_flags_that_exist(name, outcomes):
    argv, out = outcomes[name]
    lines = out.err.splitlines()
    assert (out.code, len(lines)) == (2, 1), out.err
    assert lines[0].startswith("error: "), lines[0]
    assert unknown_flags(lines[0], command_path(argv)) == [], lines[0]


def test_every_hint_site_is_reached(outcomes):
    sites = hint_sites()
    reached = set()
    for _, out in outcomes.values():
        if out.site is not None:
            file, line = out.site
            reached |= {key for key, (ranges, _) in sites.items()
                        if key[0] == file and any(a <= line <= b for a, b in ranges)}
    assert sorted(set(sites) - reached - set(ELSEWHERE)) == []
    assert sorted(set(ELSEWHERE) & reached) == []  # a listed site a row reaches: unlist it


@pytest.mark.parametrize("key", sorted(ELSEWHERE), ids="/".join)
def test_unreached_hint_sites_name_flags_of_their_commands(key):
    commands, _ = ELSEWHERE[key]
    flags = set().union(*(flags_of(command_at(c.split())) for c in commands))
    assert sorted(set(hint_sites()[key][1]) - flags) == []
