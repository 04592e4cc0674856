"""The storage password never lands anywhere: files, logs, CLI output, MLflow, dry runs.

A small real campaign (simulated objective, 2 local workers, the whole chain s0 -> s1 ->
s2 -> refit with 2 seeds) runs against a password-bearing Postgres URL (trust auth ignores
the password, so the URL connects), with MLflow tracking into a SQLite store; then every
read-side command runs on the same URL, for s1 and s2. Every byte that was produced —
the refit's outputs included — is searched for the password.
"""

from __future__ import annotations

import pytest

from tests.reliability.helpers import all_text_under, run_launch

pytestmark = pytest.mark.postgres
PASSWORD = "Zq9-sEcReT-pw-7731"


def _with_password(pg_url: str) -> str:
    return pg_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def _mlflow_text(tracking_uri: str) -> str:
    """Every param, tag and metric key of every run in the tracking store, as text."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    chunks = []
    for exp in client.search_experiments():
        chunks.append(f"{exp.name} {exp.tags} {exp.artifact_location}")
        for run in client.search_runs([exp.experiment_id]):
            chunks.append(f"{run.data.params} {run.data.tags} {list(run.data.metrics)}")
    return "\n".join(chunks)


def test_password_appears_in_no_output_file_log_or_tracking_record(pg_url, tmp_path):
    url = _with_password(pg_url)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"PSY_STORAGE": url, "MLFLOW_TRACKING_URI": tracking}
    # Create the MLflow store's schema first: two workers initialising one new SQLite
    # store at the same moment race on its migrations (the same rule as Optuna's schema).
    from mlflow import MlflowClient

    MlflowClient(tracking).search_experiments()
    outputs = []

    def launch(*args: str) -> None:
        out = run_launch(list(args), cwd=tmp_path, env=env)
        outputs.append(out.stdout + out.stderr)
        assert out.returncode == 0, out.stderr

    launch("hpo", "--agent", "criteria", "--stages", "s0,s1,s2,refit", "--objective",
           "simulated", "--trials", "4", "--epochs", "2", "--seeds", "2", "--workers", "2",
           "--experiment", "sec")
    launch("status", "--experiment", "sec")
    for stage in ("s1", "s2"):
        launch("best", "--study", f"sec.criteria.{stage}")
        launch("export", "--study", f"sec.criteria.{stage}", "--out",
               str(tmp_path / f"export-{stage}"))
        launch("report", "--study", f"sec.criteria.{stage}", "--out",
               str(tmp_path / f"report-{stage}.html"))
    for backend in ("slurm", "k8s"):
        launch("hpo", "--agent", "criteria", "--workers", "2", "--backend", backend,
               "--experiment", "sec", "--storage", url, "--dry-run")
    assert "postgres:***@" in outputs[0]  # the URL was shown, masked
    for stage in ("s1", "s2"):
        assert (tmp_path / f"export-{stage}").is_dir()
        assert (tmp_path / f"report-{stage}.html").is_file()
    refit = tmp_path / "runs" / "sec" / "refit" / "criteria"
    assert {"metrics.json", "config.json"} <= {p.name for p in refit.iterdir()}
    produced = all_text_under(tmp_path)
    for name in ("sec.criteria.s1", "sec.criteria.s2", "sec.criteria.refit"):
        assert name in produced  # the search looked at every stage's real output
    tracked = _mlflow_text(tracking)
    assert "sec.criteria.s2" in tracked  # (the refit logs no MLflow run: files only)
    for where, text in [("CLI output", "\n".join(outputs)), ("files", produced),
                        ("MLflow", tracked)]:
        assert PASSWORD not in text, f"password found in {where}"
