"""`launch hpo --workers-per-gpu 2 --backend slurm` on the real single-node Slurm: one array
task runs `launch worker --procs 2`, and both of its processes take trials from the study."""

from __future__ import annotations

import optuna
import pytest

from tests.backends.test_backend_slurm import slurm_cluster  # noqa: F401 - fixture
from tests.cli.test_cli_hpo import launch
from tests.cli.test_cli_hpo_slurm import campaign  # noqa: F401 - fixture


@pytest.mark.slurm
@pytest.mark.postgres
def test_one_array_task_runs_two_workers(tmp_path, campaign):  # noqa: F811
    experiment, runs, url = campaign
    common = ["--experiment", experiment, "--runs-dir", str(runs)]
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
                  "--trials", "6", "--epochs", "8", "--workers", "1", "--workers-per-gpu", "2",
                  "--backend", "slurm", "--gpus-per-worker", "0", "--slurm-cpus-per-task", "2",
                  "--slurm-time-min", "30", "--follow", *common], cwd=tmp_path,
                 env={"PSY_STORAGE": url}, timeout=300)
    assert out.returncode == 0, out.stderr
    trials = optuna.load_study(study_name=f"{experiment}.criteria.s1", storage=url).trials
    assert {t.user_attrs["worker_index"] for t in trials} == {0, 1}
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    status = launch(["status", *common], cwd=tmp_path, env={"PSY_STORAGE": url})
    assert status.returncode == 0, status.stderr
    assert "(2 workers per GPU) — " in status.stdout.splitlines()[-1]
