"""`launch report`: a self-contained HTML page (plotly.js inlined once, no CDN), a header
table that matches the study, notes instead of failures when a plot is impossible, and one-line
errors (exit 2) for unknown studies and unusable paths. The storage password never leaks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reporting.conftest import GRAPH_DIV_RE, STUDY, build_study


def _plotlyjs() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _row(page: str, key: str) -> str:
    match = re.search(rf"<tr><th>{re.escape(key)}</th><td>([^<]*)</td></tr>", page)
    assert match, f"no row {key!r} in the summary table"
    return match[1]


def _assert_self_contained(page: str) -> None:
    assert "<script src=" not in page and 'src="http' not in page and 'src="//' not in page
    assert page.count(_plotlyjs()) == 1


def test_report_sqlite_full_study(tmp_path: Path, sqlite_url: str, launch):
    study = build_study(sqlite_url)
    out = tmp_path / "out" / "report.html"
    result = launch("report", "--study", STUDY, "--storage", sqlite_url, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"wrote {out} (study {STUDY}, 15 trials; storage {sqlite_url})\n"
    page = out.read_text(encoding="utf-8")
    _assert_self_contained(page)
    assert f"<h1>Study {STUDY}</h1>" in page
    assert (_row(page, "trials complete"), _row(page, "trials pruned"),
            _row(page, "trials fail"), _row(page, "trials total")) == ("13", "1", "1", "15")
    best = study.best_trial
    assert _row(page, "best value") == f"{best.value:.6g} (trial {best.number})"
    assert _row(page, "lr") == str(best.params["lr"])
    for title in ("Optimization history", "Hyperparameter importances",
                  "Parallel coordinates", "Intermediate values (per epoch)"):
        assert f"<h2>{title}</h2>" in page
    assert len(GRAPH_DIV_RE.findall(page)) == 4
    assert 'class="note"' not in page
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temp file


@pytest.mark.postgres
def test_report_postgres_never_shows_password(tmp_path: Path, pg_url: str, launch):
    # The test server trusts every local login, so any password is accepted: a good probe.
    secret = "s3cret-Pw0rd"
    url = pg_url.replace("postgres@", f"postgres:{secret}@", 1)
    build_study(url)
    out = tmp_path / "pg.html"
    result = launch("report", "--study", STUDY, "--storage", url, "--out", out)
    assert result.exit_code == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    _assert_self_contained(page)
    masked = url.replace(secret, "***")
    assert _row(page, "storage") == masked
    assert masked in result.stdout
    assert secret not in page + result.stdout + result.stderr
    assert _row(page, "trials total") == "15" and len(GRAPH_DIV_RE.findall(page)) == 4


def test_unknown_study_lists_existing_ones(tmp_path: Path, sqlite_url: str):
    build_study(sqlite_url, name="exp.share.s0", n_trials=1)
    build_study(sqlite_url, name="exp.joint.s0", n_trials=1)
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("launch")), "report", "--study", "exp.nope.s1",
         "--storage", sqlite_url, "--out", str(tmp_path / "r.html")],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr == (f"error: no study named 'exp.nope.s1' in storage {sqlite_url} — "
                           "existing studies: exp.joint.s0, exp.share.s0\n")
    assert not (tmp_path / "r.html").exists()


def test_storage_without_studies(tmp_path: Path, sqlite_url: str, launch):
    import optuna

    optuna.storages.RDBStorage(sqlite_url)  # schema only, no study
    result = launch("report", "--study", STUDY, "--storage", sqlite_url,
                    "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    assert result.stderr == (f"error: no study named '{STUDY}' in storage {sqlite_url} — the "
                             "storage holds no studies yet; start a search with `launch hpo`\n")


def test_missing_sqlite_file_is_one_line_error(tmp_path: Path, launch):
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    result = launch("report", "--study", STUDY, "--storage", url, "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: no storage file at {tmp_path / 'absent.db'} — ")


def test_one_complete_trial_gets_notes_not_failures(tmp_path: Path, sqlite_url: str, launch):
    import optuna

    study = optuna.create_study(study_name=STUDY, storage=sqlite_url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    out = tmp_path / "r.html"
    assert launch("report", "--study", STUDY, "--storage", sqlite_url, "--out", out).exit_code == 0
    page = out.read_text(encoding="utf-8")
    assert "Needs at least 2 complete trials; the study has 1." in page
    assert "Intermediate values" not in page  # no trial reported any
    assert len(GRAPH_DIV_RE.findall(page)) == 2  # history + parallel coordinates


def test_constant_params_and_escaped_name(tmp_path: Path, sqlite_url: str, launch):
    import optuna

    name = "exp<&>.criteria.s0"
    study = optuna.create_study(study_name=name, storage=sqlite_url, direction="maximize")
    study.optimize(lambda t: t.suggest_categorical("opt", ["adamw"]) == "adamw", n_trials=3)
    out = tmp_path / "r.html"
    assert launch("report", "--study", name, "--storage", sqlite_url, "--out", out).exit_code == 0
    page = out.read_text(encoding="utf-8")
    assert "No parameter varies across the complete trials" in page
    assert "<h1>Study exp&lt;&amp;&gt;.criteria.s0</h1>" in page and name not in page


def test_study_without_trials(tmp_path: Path, sqlite_url: str, launch):
    import optuna

    optuna.create_study(study_name=STUDY, storage=sqlite_url, direction="minimize")
    out = tmp_path / "r.html"
    assert launch("report", "--study", STUDY, "--storage", sqlite_url, "--out", out).exit_code == 0
    page = out.read_text(encoding="utf-8")
    _assert_self_contained(page)
    assert GRAPH_DIV_RE.findall(page) == []
    assert page.count('class="note"') == 3
    assert _row(page, "best value") == "—" and _row(page, "trials total") == "0"


def test_unwritable_out_is_config_error(tmp_path: Path, sqlite_url: str, launch):
    build_study(sqlite_url, n_trials=2)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    result = launch("report", "--study", STUDY, "--storage", sqlite_url,
                    "--out", blocker / "r.html")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot write the report to {blocker / 'r.html'}: ")
    assert result.stderr.endswith(" — pass a writable file path to --out\n")


def test_multi_objective_study_is_refused(tmp_path: Path, sqlite_url: str, launch):
    import optuna

    optuna.create_study(study_name=STUDY, storage=sqlite_url, directions=["maximize"] * 2)
    result = launch("report", "--study", STUDY, "--storage", sqlite_url,
                    "--out", tmp_path / "r.html")
    assert result.exit_code == 2
    assert result.stderr == (f"error: study '{STUDY}' has 2 objectives — "
                             "launch report supports single-objective studies only\n")
