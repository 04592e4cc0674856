"""`launch hpo`: the front door, through real subprocesses, real local workers and real Postgres.

The campaigns here use the `simulated` objective (the benchmark workload: per-epoch reports,
heavy-tailed durations) so they test the launcher + backend + worker path in seconds; the
real training objective is exercised by tests/hpo.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "Hunter2-s3cret"


def launch(args, cwd: Path, env: dict | None = None, timeout: float = 240):
    full_env = {**os.environ, "PSY_DATA_DIR": str(REPO / "data" / "sample"), **(env or {})}
    full_env.pop("PSY_STORAGE", None) if "PSY_STORAGE" not in (env or {}) else None
    return subprocess.run([sys.executable, "-m", "psy_agents.cli.main", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def with_password(pg_url: str) -> str:
    # Trust auth on the test server ignores the password, so the URL still connects while
    # carrying a secret the test can grep for.
    return pg_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


def all_text_under(path: Path) -> str:
    chunks = []
    for f in path.rglob("*"):
        if f.is_file():
            chunks.append(f.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


def test_local_campaign_on_postgres_meets_budget_and_hides_password(tmp_path, pg_url):
    url = with_password(pg_url)
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
                  "--trials", "8", "--workers", "2", "--experiment", "e1"],
                 cwd=tmp_path, env={"PSY_STORAGE": url})
    assert out.returncode == 0, out.stderr
    assert "created 1 studies in postgresql+psycopg2://postgres:***@" in out.stderr
    study = optuna.load_study(study_name="e1.criteria.s1", storage=pg_url)
    states = [t.state for t in study.trials]
    finished = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
                   for s in states)
    assert finished == 8  # claimed under the budget lock: no overshoot
    assert all(s.is_finished() for s in states)
    assert "e1.criteria.s1" in out.stdout and f"{finished}/8" in out.stdout
    logs = sorted((tmp_path / "runs" / "e1" / "logs").glob("worker-*.log"))
    assert [p.name for p in logs] == ["worker-0.log", "worker-1.log"]
    assert PASSWORD not in out.stdout + out.stderr
    assert PASSWORD not in all_text_under(tmp_path / "runs")


def test_embedded_sqlite_default_with_two_workers(tmp_path):
    out = launch(["hpo", "--agent", "evidence", "--stage", "s1", "--objective", "simulated",
                  "--trials", "5", "--workers", "2"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    db = tmp_path / "runs" / "optuna.db"
    assert db.exists()
    study = optuna.load_study(study_name="default.evidence.s1", storage=f"sqlite:///{db}")
    assert len([t for t in study.trials if t.state.is_finished()]) >= 5


@pytest.mark.parametrize(("backend", "marker"), [
    ("local", "worker --study dry.joint.s0 --data-dir "),
    ("slurm", "#SBATCH --array=0-2%"),
    ("k8s", "completionMode: Indexed"),
])
def test_dry_run_prints_and_creates_nothing(tmp_path, backend, marker):
    # k8s pods cannot reach the default SQLite file: a k8s launch names a server database
    env = {"PSY_STORAGE": "postgresql+psycopg2://psy@postgres:5432/psy"} if backend == "k8s" \
        else None
    out = launch(["hpo", "--agent", "joint", "--workers", "3", "--backend", backend,
                  "--experiment", "dry", "--dry-run"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert marker in out.stdout
    assert not (tmp_path / "runs" / "optuna.db").exists()
    assert not (tmp_path / "runs" / "dry").exists()


@pytest.mark.parametrize(("image", "node_python", "worker"), [
    # Inside the image the launcher's interpreter path does not exist: its `launch` runs.
    ("/img/psy.sif", None, "# worker of each array task (inside /img/psy.sif): launch worker"),
    (None, None, f"# worker of each array task: {shlex.quote(sys.executable)} -m "
                 "psy_agents.cli.main worker"),
    # the nodes' own Python, named by the profile/flag, runs both submitit and the worker
    (None, "/opt/site/bin/python", "# worker of each array task: /opt/site/bin/python -m "
                                   "psy_agents.cli.main worker"),
])
def test_slurm_dry_run_shows_the_worker_command(tmp_path, image, node_python, worker):
    flags = ["--slurm-apptainer-image", image] if image else []
    flags += ["--slurm-python", node_python] if node_python else []
    out = launch(["hpo", "--agent", "joint", "--workers", "2", "--backend", "slurm",
                  *flags, "--experiment", "ap", "--dry-run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # Without shared-filesystem paths in the profile, the nodes use the launcher's own.
    where = f"--data-dir {REPO / 'data' / 'sample'} --runs-dir {tmp_path / 'runs'}"
    assert f"{worker} --study ap.joint.s0 {where} --index <array task index>" in lines, \
        out.stdout
    submit = next(line for line in lines if line.startswith("srun "))
    python = (f"apptainer exec --nv {image} python3" if image
              else node_python or shlex.quote(sys.executable))
    assert f" {python} -u -m submitit.core._submit " in submit


@pytest.mark.parametrize("flag", ["--profile", "--backend-profile"])
def test_profile_file_takes_effect(tmp_path, flag):
    profile = tmp_path / "site.toml"
    profile.write_text('partition = "a100-long"\ntime_min = 90\n')
    out = launch(["hpo", "--agent", "criteria", "--backend", "slurm", flag, str(profile),
                  "--experiment", "prof", "--dry-run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "#SBATCH --partition=a100-long" in lines and "#SBATCH --time=90" in lines


def test_option_of_unselected_backend_is_usage_error(tmp_path):
    out = launch(["hpo", "--agent", "criteria", "--slurm-partition", "gpu"], cwd=tmp_path)
    assert out.returncode == 2
    assert "--slurm-partition" in out.stderr and "--backend slurm" in out.stderr
    assert not (tmp_path / "runs" / "optuna.db").exists()


def test_missing_sbatch_fails_before_anything_is_created(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    out = launch(["hpo", "--agent", "criteria", "--backend", "slurm", "--experiment", "nos"],
                 cwd=tmp_path, env={"PATH": str(bare)})
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "sbatch" in out.stderr
    assert out.stderr.count("\n") == 1
    assert not (tmp_path / "runs" / "optuna.db").exists()


def test_unknown_agent_and_conflicting_stage_flags(tmp_path):
    out = launch(["hpo", "--agent", "planner"], cwd=tmp_path)
    assert out.returncode == 2 and "error: invalid value for '--agent'" in out.stderr
    out = launch(["hpo", "--agent", "criteria", "--plan", "max", "--stage", "s1"], cwd=tmp_path)
    assert out.returncode == 2 and "give one of --plan, --stage or --stages" in out.stderr


def test_agent_all_shares_one_pool_and_each_worker_starts_on_its_own_agent(tmp_path, pg_url):
    out = launch(["hpo", "--agent", "all", "--stage", "s1", "--objective", "simulated",
                  "--trials", "3", "--workers", "4", "--experiment", "pool"],
                 cwd=tmp_path, env={"PSY_STORAGE": pg_url})
    assert out.returncode == 0, out.stderr
    first_study_of_worker: dict[int, tuple] = {}
    for agent in ("criteria", "evidence", "share", "joint"):
        study = optuna.load_study(study_name=f"pool.{agent}.s1", storage=pg_url)
        finished = [t for t in study.trials if t.state.is_finished()]
        states = [(t.number, t.state.name, t.user_attrs.get("worker_index")) for t in study.trials]
        assert len(finished) >= 3 and all(t.state.is_finished() for t in study.trials), (
            agent, states, out.stderr[-3000:])
        for t in study.trials:
            w = t.user_attrs["worker_index"]
            if w not in first_study_of_worker or t.datetime_start < first_study_of_worker[w][0]:
                first_study_of_worker[w] = (t.datetime_start, agent)
    assert {w: a for w, (_, a) in first_study_of_worker.items()} == {
        0: "criteria", 1: "evidence", 2: "share", 3: "joint"}


def test_agent_all_with_fewer_workers_than_agents_finishes_every_budget(tmp_path, pg_url):
    # Two workers, four agents: share and joint have no worker of their own, so their
    # budgets finish only if workers take work from other agents' chains.
    out = launch(["hpo", "--agent", "all", "--stage", "s1", "--objective", "simulated",
                  "--trials", "3", "--epochs", "2", "--workers", "2", "--experiment", "few"],
                 cwd=tmp_path, env={"PSY_STORAGE": pg_url})
    assert out.returncode == 0, out.stderr
    agents = ("criteria", "evidence", "share", "joint")
    ran: dict[int, list[tuple]] = {0: [], 1: []}  # worker -> [(start, agent)]
    for agent in agents:
        study = optuna.load_study(study_name=f"few.{agent}.s1", storage=pg_url)
        assert sum(t.state.is_finished() for t in study.trials) >= 3, (agent, out.stderr[-3000:])
        assert all(t.state.is_finished() for t in study.trials), agent
        for t in study.trials:
            ran[t.user_attrs["worker_index"]].append((t.datetime_start, agent))
    # Each worker starts on its own agent (index mod 4), then helps the others.
    assert [min(ran[w])[1] for w in (0, 1)] == ["criteria", "evidence"]
    foreign = {w: {a for _, a in ran[w]} - {agents[w]} for w in (0, 1)}
    assert foreign[0] | foreign[1] >= {"share", "joint"}, foreign
    logs = sorted(p.name for p in (tmp_path / "runs" / "few" / "logs").glob("worker-*.log"))
    assert logs == ["worker-0.log", "worker-1.log"]


def test_own_chain_first_rotation():
    from psy_agents.cli.worker import own_chain_first

    chains = ("a", "b", "c", "d")
    assert own_chain_first(chains, 0) == chains
    assert own_chain_first(chains, 2) == ("c", "d", "a", "b")
    assert own_chain_first(chains, 5) == ("b", "c", "d", "a")
    assert own_chain_first(("only",), 7) == ("only",)


def test_fix_holds_a_setting_and_leaves_it_out_of_the_search(tmp_path):
    from psy_agents.hpo.connect import open_storage
    from psy_agents.hpo.spec import load_spec

    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--objective", "simulated",
                  "--trials", "2", "--epochs", "2", "--fix", "max_length=128",
                  "--fix", "pooling=mean"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    url = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    study, spec = load_spec(open_storage(url), "default.criteria.s1")
    assert spec.train_defaults == {"max_length": 128, "pooling": "mean"}
    assert not {"max_length", "pooling"} & {p.name for p in spec.search_space}
    assert all("max_length" not in t.params for t in study.trials)


@pytest.mark.parametrize(("fix", "message"), [
    ("lr", "--fix 'lr' is not KEY=VALUE"),
    ("lrr=0.1", "--fix: unknown key 'lrr'"),
    ("max_length=long", "the value of 'max_length' is 'long', but must be int"),
])
def test_bad_fix_is_one_line_and_creates_nothing(fix, message, tmp_path):
    out = launch(["hpo", "--agent", "criteria", "--stage", "s1", "--fix", fix], cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert message in out.stderr
    assert not (tmp_path / "runs").exists()
