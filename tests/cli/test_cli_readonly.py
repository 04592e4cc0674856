"""Read-only commands write nothing: not a splits file, not `runs/`, not a SQLite file.

Each command runs in its own copy of one finished campaign folder: the sample CSV files
without a splits file (so a command that saves one is caught), and the `runs/` a real
`launch hpo --objective simulated` left (SQLite storage, a finished study, the exited local
workers' backend.json). Every command runs in-process, and the whole tree is snapshotted
before and after: every path, and each file's size and mtime.

Two things of SQLite are not a write and are left out: a directory's mtime, and the
`-shm` file and an empty `-wal` file beside the database, which SQLite keeps while a
connection is open (the storage engine outlives the command in this process). A `-wal`
file with content is kept in the snapshot: in WAL mode every write lands there first.

Seen once: `launch data stats --splits /missing.json` printed its table and created that
file. Not listed here, because they write by design: `data split`, `data synth`, `train`,
`export`, `report`, `plan --out`, `hpo` (without --dry-run), `bench`, and `eval` (it writes
`eval-<split>.json` beside the model and its tokenized features under the cache).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from psy_agents.cli.main import cli

CSV_FILES = ("redsm5_posts.csv", "redsm5_annotations.csv", "manifest.json")
ENV_NAMES = ("PSY_STORAGE", "PSY_EXPERIMENT", "PSY_RUNS_DIR", "PSY_DATA_DIR", "PSY_STAGES",
             "PSY_CACHE_DIR", "MLFLOW_TRACKING_URI", "PSY_WORKERS_PER_GPU", "PSY_BACKEND")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ENV_NAMES}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, sample_dir: Path) -> Path:
    """A folder as a user has it after one small local search of experiment `r`."""
    root = tmp_path_factory.mktemp("campaign")
    (root / "data" / "sample").mkdir(parents=True)
    for name in CSV_FILES:
        shutil.copy(sample_dir / name, root / "data" / "sample" / name)
    out = subprocess.run(
        [sys.executable, "-m", "psy_agents.cli.main", "hpo", "--agent", "criteria",
         "--objective", "simulated", "--stage", "s1", "--trials", "2", "--epochs", "1",
         "--experiment", "r"], cwd=root, env=_clean_env(), capture_output=True, text=True,
        timeout=120)
    assert out.returncode == 0, out.stderr
    assert (root / "runs" / "optuna.db").is_file()
    assert (root / "runs" / "r" / "backend.json").is_file()
    assert not list((root / "data" / "sample").glob("splits-*.json"))
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int] | str]:
    """Every path under ``root``: ``"dir"`` for a folder, (size, mtime_ns) for a file, less
    SQLite's connection files (see the module docstring)."""
    out: dict[str, tuple[int, int] | str] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.name.endswith("-shm") or (path.name.endswith("-wal") and st.st_size == 0):
            continue
        out[str(path.relative_to(root))] = "dir" if path.is_dir() else (st.st_size,
                                                                         st.st_mtime_ns)
    return out


# (id, argv, exit code, a fragment its output must hold: proof that it did its work, not
# merely failed before it could write).
READS = [
    ("data-validate", ["data", "validate"], 0, "data: data/sample"),
    ("data-stats", ["data", "stats"], 0, "split hash "),
    ("data-stats-json", ["data", "stats", "--json"], 0, '"split_hash"'),
    ("data-stats-missing-splits", ["data", "stats", "--splits", "missing.json"], 2,
     "error: missing.json: no such splits file"),
    ("baseline", ["baseline"], 0, "symptom_macro_f1"),
    ("baseline-test", ["baseline", "--split", "test"], 0, "on the test split of data/sample"),
    ("baseline-bad-data", ["baseline", "--data-dir", "nope"], 2,
     "error: nope: data directory not found"),
    ("hpo-dry-run", ["hpo", "--agent", "criteria", "--dry-run"], 0, "local worker(s)"),
    ("hpo-dry-run-bad-data", ["hpo", "--agent", "criteria", "--dry-run", "--data-dir", "nope"],
     2, "error: data folder nope does not exist"),
    ("cancel-exited", ["cancel", "--experiment", "r"], 0,
     "nothing to cancel: the local workers of r (launch 1) have exited"),
    ("cancel-unknown", ["cancel", "--experiment", "nope"], 2,
     "no workers were recorded for this experiment"),
    ("plan", ["plan", "--agent", "criteria", "--workers", "2", "--epoch-seconds", "criteria=3",
              "--backbone", "tiny"], 0, "stage max, 2 workers"),
    ("status", ["status"], 0, "r.criteria.s1  [####################] 2/2"),
    ("status-experiment", ["status", "--experiment", "r"], 0, "workers: local job "),
    ("best", ["best", "--study", "r.criteria.s1"], 0, '"study": "r.criteria.s1"'),
    ("best-unknown-study", ["best", "--study", "r.nope.s1"], 2,
     "error: no study named 'r.nope.s1'"),
    ("doctor", ["doctor", "--workers", "2"], 0, "ok   reach: sqlite:///runs/optuna.db answers"),
    ("doctor-no-file", ["doctor", "--storage", "sqlite:///runs/other.db"], 0,
     "runs/other.db does not exist yet"),
    ("status-no-file", ["status", "--storage", "sqlite:///runs/other.db"], 2,
     "error: no storage file at runs/other.db"),
]


@pytest.mark.parametrize(("argv", "code", "fragment"), [row[1:] for row in READS],
                         ids=[row[0] for row in READS])
def test_read_only_command_writes_nothing(argv, code, fragment, campaign, tmp_path,
                                          monkeypatch):
    tree = tmp_path / "c"
    shutil.copytree(campaign, tree)
    monkeypatch.chdir(tree)
    before = snapshot(tree)
    result = CliRunner().invoke(cli, argv, env=dict.fromkeys(ENV_NAMES), catch_exceptions=False)
    assert (result.exit_code, fragment in result.output) == (code, True), result.output
    assert snapshot(tree) == before


def test_the_snapshot_sees_a_write_to_the_storage(campaign, tmp_path, monkeypatch):
    """The SQLite files left out above hide no write: one user attribute set in-process,
    engine still open, changes the snapshot."""
    import optuna

    tree = tmp_path / "c"
    shutil.copytree(campaign, tree)
    monkeypatch.chdir(tree)
    assert CliRunner().invoke(cli, ["status"], env=dict.fromkeys(ENV_NAMES)).exit_code == 0
    before = snapshot(tree)
    study = optuna.load_study(study_name="r.criteria.s1", storage="sqlite:///runs/optuna.db")
    study.set_user_attr("touched", True)
    assert snapshot(tree) != before
