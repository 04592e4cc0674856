"""Fixtures for the data tests: a writable copy of the sample and a CLI runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from psy_agents.cli.main import cli

DATA_FILES = ("redsm5_posts.csv", "redsm5_annotations.csv")


@pytest.fixture
def data_copy(tmp_path: Path, sample_dir: Path) -> Path:
    """The two sample CSV files (and manifest) copied into a fresh folder."""
    out = tmp_path / "d"
    out.mkdir()
    for name in (*DATA_FILES, "manifest.json"):
        shutil.copy(sample_dir / name, out / name)
    return out


@pytest.fixture
def launch():
    """Invoke `launch ARGS...` in-process; returns click's Result (stdout and stderr apart)."""
    runner = CliRunner()

    def run(*args: str, env: dict[str, str] | None = None):
        return runner.invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)

    return run


@pytest.fixture
def snapshot():
    """``snapshot(folder)``: every file under it with its bytes, to prove nothing was written."""

    def take(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
                if p.is_file()}

    return take
