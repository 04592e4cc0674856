"""`launch worker --gpu-share K` / `--procs K` in-process: the memory share is set before the
first trial, and a slot hands its children this same command (storage URL through the
environment only)."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from psy_agents.cli.main import cli

URL = "postgresql+psycopg2://psy:hunter2@db:5432/optuna"
COMMAND = ["worker", "--study", "e.criteria.s1", "--study", "e.evidence.s1",
           "--data-dir", "/d", "--runs-dir", "/r", "--heartbeat-interval-s", "5",
           "--grace-period-s", "30", "--mlflow-uri", "http://mlflow:5000"]


def _patch(monkeypatch, calls: list):
    """Record share_gpu_memory, run_slot and Worker.run instead of running them."""
    from psy_agents.backends import slot
    from psy_agents.hpo.worker import Worker

    monkeypatch.setattr(slot, "share_gpu_memory", lambda k: calls.append(("share", k)))
    monkeypatch.setattr(slot, "run_slot", lambda argv, k, index, env: calls.append(
        ("slot", argv, k, index, env)) or 75)
    monkeypatch.setattr(Worker, "run", lambda self: calls.append(("run", self.cfg)) or 0)


def test_the_gpu_share_is_set_before_the_worker_runs(monkeypatch):
    calls: list = []
    _patch(monkeypatch, calls)
    out = CliRunner().invoke(cli, [*COMMAND, "--gpu-share", "2", "--index", "3"],
                             env={"PSY_STORAGE": URL})
    assert out.exit_code == 0, out.output
    assert [c[0] for c in calls] == ["share", "run"]
    assert calls[0] == ("share", 2)
    assert calls[1][1].index == 3


def test_a_slot_starts_its_children_with_this_command_and_the_url_in_their_env(monkeypatch):
    calls: list = []
    _patch(monkeypatch, calls)
    runner = CliRunner()
    out = runner.invoke(cli, [*COMMAND, "--procs", "2", "--index", "1"], env={"PSY_STORAGE": URL},
                        standalone_mode=False)
    assert out.exception is None, out.output
    assert out.return_value == 75  # the slot's combined code is the worker's exit code
    ((kind, argv, k, index, env),) = calls  # no share, no Worker in the slot process itself
    assert (kind, k, index, env) == ("slot", 2, 1, {"PSY_STORAGE": URL})
    assert argv[:4] == [sys.executable, "-m", "psy_agents.cli.main", "worker"]
    assert "hunter2" not in " ".join(argv)
    assert not {"--procs", "--gpu-share", "--index", "--storage"} & set(argv)
    # A child started with that command (plus what the slot adds) is the same worker.
    calls.clear()
    child = runner.invoke(cli, [*argv[3:], "--gpu-share", "2", "--index", "3"],
                          env={"PSY_STORAGE": URL})
    assert child.exit_code == 0, child.output
    direct = runner.invoke(cli, [*COMMAND, "--gpu-share", "2", "--index", "3"],
                           env={"PSY_STORAGE": URL})
    assert direct.exit_code == 0, direct.output
    (_, share_a), (_, via_slot), (_, share_b), (_, by_hand) = calls
    assert share_a == share_b == 2 and via_slot == by_hand


def test_procs_and_gpu_share_together_are_a_usage_error():
    out = CliRunner().invoke(cli, [*COMMAND, "--procs", "2", "--gpu-share", "2", "--index", "0"],
                             env={"PSY_STORAGE": URL})
    assert out.exit_code == 2
    assert "--procs K gives each of its K processes --gpu-share K; drop --gpu-share" in \
        out.output


def test_workers_per_gpu_below_1_is_refused_before_anything_is_made(tmp_path):
    out = CliRunner().invoke(cli, ["hpo", "--agent", "joint", "--workers-per-gpu", "0",
                                   "--runs-dir", str(tmp_path / "runs"), "--dry-run"],
                             prog_name="launch")
    assert out.exit_code == 2
    assert out.stderr == ("error: invalid value for '--workers-per-gpu': 0 is not in the range "
                          "x>=1 — see 'launch hpo --help'\n")
    assert not (tmp_path / "runs").exists()
