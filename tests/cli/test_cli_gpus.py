"""Cluster dry runs: GPU workers by default, site options, Apptainer binds — pinned by golden files.

No GPU, Slurm controller or Kubernetes API is needed: `--dry-run` prints exactly what would
be submitted (the sbatch script submitit writes, the Job YAML), and the local dry run shows
each worker's CUDA_VISIBLE_DEVICES. The user's command from the README is run as typed,
with the default profiles left out (PSY_LAUNCH_DIR points nowhere) so the figures are the
defaults of the code; the `-site` goldens add a site profile (golden/site-<backend>.toml)
setting the cluster options an admin sets. These goldens are the only ones of the sbatch
script and the Job: each is what `launch hpo ... --dry-run` prints.

Regenerate them after an intended change with
`PSY_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/cli/test_cli_gpus.py -k golden`:
each differing golden is rewritten and its test fails, so review `git diff tests/cli/golden`
and rerun without the variable.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli_hpo import REPO, launch

GOLDEN = Path(__file__).with_name("golden")
USER_COMMAND = ["hpo", "--agent", "joint", "--workers", "16"]
# What a cluster user exports (README); the password must never reach the printed artefact.
STORAGE = "postgresql+psycopg2://postgres:hunter2-secret@127.0.0.1:5432/test"


def _dry_run(tmp_path: Path, *args: str, env: dict | None = None):
    # A dry run checks that the data loads, as a launch does: <cwd>/data is the sample
    # (copied: a link would be resolved into the rendered worker paths).
    data = tmp_path / "data"
    if not data.exists():
        shutil.copytree(REPO / "data" / "sample", data)
    return launch([*USER_COMMAND, *args, "--dry-run"], cwd=tmp_path,
                  env={"PSY_LAUNCH_DIR": str(tmp_path / "no-profiles"),
                       "PSY_DATA_DIR": str(tmp_path / "data"), "PSY_STORAGE": STORAGE,
                       **(env or {})})


def _normalized(text: str, tmp_path: Path) -> str:
    return text.replace(str(tmp_path), "<cwd>").replace(sys.executable, "<python>")


def _assert_golden(text: str, name: str) -> None:
    """``text`` equals golden ``name``; with PSY_UPDATE_GOLDEN=1 a differing golden is
    rewritten and the test still fails, so no run passes on a golden it just wrote."""
    path = GOLDEN / name
    if os.environ.get("PSY_UPDATE_GOLDEN") == "1" and (
            not path.exists() or text != path.read_text()):
        path.write_text(text)
        pytest.fail(f"rewrote {path}: review `git diff {path}`, then rerun without "
                    "PSY_UPDATE_GOLDEN")
    assert text == path.read_text()


def _site(backend: str) -> list[str]:
    return ["--profile", str(GOLDEN / f"site-{backend}.toml"), "--experiment", "Paper_Run.1"]


@pytest.mark.parametrize(("backend", "golden", "extra"), [
    ("slurm", "hpo-slurm.sh", []), ("k8s", "hpo-k8s.yaml", []),
    # two worker processes in each array task / pod, sharing its one GPU
    ("slurm", "hpo-slurm-2-per-gpu.sh", ["--workers-per-gpu", "2"]),
    ("k8s", "hpo-k8s-2-per-gpu.yaml", ["--workers-per-gpu", "2"]),
    # a site profile: partition, account, Apptainer ... / namespace, Kueue queue, tolerations ...
    ("slurm", "hpo-slurm-site.sh", _site("slurm")), ("k8s", "hpo-k8s-site.yaml", _site("k8s")),
])
def test_golden_the_users_command_asks_for_one_gpu_per_worker(tmp_path, backend, golden,
                                                              extra):
    out = _dry_run(tmp_path, "--backend", backend, *extra)
    assert out.returncode == 0, out.stderr
    _assert_golden(_normalized(out.stdout, tmp_path), golden)
    assert "hunter2" not in out.stdout + out.stderr
    assert os.listdir(tmp_path) == ["data"]  # a dry run creates nothing


def test_two_workers_per_gpu_differ_from_one_only_in_what_each_slot_runs():
    """The K=2 goldens are the K=1 ones plus the slot's `--procs 2` and a first comment
    saying what each slot runs: the same array, the same Job, one GPU per task / pod."""
    pairs = {"hpo-slurm.sh": ("hpo-slurm-2-per-gpu.sh", "--procs 2 ", "array task"),
             "hpo-k8s.yaml": ("hpo-k8s-2-per-gpu.yaml", "        - --procs\n        - '2'\n",
                              "pod")}
    for one, (two, procs, slot) in pairs.items():
        text = (GOLDEN / two).read_text()
        comment = (f"# each {slot} I runs 2 worker processes, indices 2*I to 2*I+1 "
                   "(`--procs 2`), each with 1/2 of the GPU's memory\n")
        assert text.count(comment) == text.count(procs) == 1
        assert text.replace(comment, "").replace(procs, "") == (GOLDEN / one).read_text()


def test_local_workers_per_gpu_share_each_slot(tmp_path):
    out = launch(["hpo", "--agent", "joint", "--workers", "2", "--workers-per-gpu", "2",
                  "--dry-run"], cwd=tmp_path,
                 env={"CUDA_VISIBLE_DEVICES": "0,1",
                      "PSY_LAUNCH_DIR": str(tmp_path / "no-profiles")})
    assert out.returncode == 0, out.stderr
    lines = [line.split() for line in out.stdout.splitlines() if line.startswith("env ")]
    assert [(w[1], w[w.index("--gpu-share") + 1], w[w.index("--index") + 1]) for w in lines] \
        == [("CUDA_VISIBLE_DEVICES=0", "2", "0"), ("CUDA_VISIBLE_DEVICES=0", "2", "1"),
            ("CUDA_VISIBLE_DEVICES=1", "2", "2"), ("CUDA_VISIBLE_DEVICES=1", "2", "3")]


@pytest.mark.parametrize(("backend", "gpu_line"), [("slurm", "#SBATCH --gpus-per-node=1"),
                                                   ("k8s", "nvidia.com/gpu: '1'")])
def test_gpus_per_worker_0_asks_for_no_gpu(tmp_path, backend, gpu_line):
    with_gpu = _dry_run(tmp_path, "--backend", backend)
    cpu = _dry_run(tmp_path, "--backend", backend, "--gpus-per-worker", "0")
    assert cpu.returncode == 0, cpu.stderr
    assert gpu_line in with_gpu.stdout
    assert "gpu" not in _normalized(cpu.stdout, tmp_path).lower()


@pytest.mark.parametrize("backend", ["local", "slurm", "k8s"])
def test_two_gpus_per_worker_are_refused_in_one_line_and_nothing_is_created(tmp_path, backend):
    out = launch([*USER_COMMAND, "--backend", backend, "--gpus-per-worker", "2"], cwd=tmp_path,
                 env={"PSY_STORAGE": f"sqlite:///{tmp_path}/runs/o.db"})
    assert out.returncode == 2
    assert out.stderr == ("error: --gpus-per-worker 2: a trial trains on one GPU, so 1 of each "
                          "worker's GPUs would sit idle — use --gpus-per-worker 1 and 2x the "
                          "--workers (each worker takes its own GPU)\n")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("visible", "expected"), [
    ("0,1", ["CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1", "CUDA_VISIBLE_DEVICES=0"]),
    ("", ["CUDA_VISIBLE_DEVICES=''"] * 3),
])
def test_local_workers_take_the_visible_gpus_one_each_or_the_cpu(tmp_path, visible, expected):
    out = launch(["hpo", "--agent", "joint", "--workers", "3", "--dry-run"], cwd=tmp_path,
                 env={"CUDA_VISIBLE_DEVICES": visible,
                      "PSY_LAUNCH_DIR": str(tmp_path / "no-profiles")})
    assert out.returncode == 0, out.stderr
    workers = [line.split()[1] for line in out.stdout.splitlines() if line.startswith("env ")]
    assert workers == expected


def test_slurm_site_options_pass_through_and_ours_are_refused(tmp_path):
    out = _dry_run(tmp_path, "--backend", "slurm", "--slurm-additional", "mail-type=END",
                   "--slurm-additional", "reservation=gpu-week",
                   "--slurm-additional", "gres=shard:2")
    assert out.returncode == 2  # gres is ours: set it with --slurm-gres
    assert out.stderr == ("error: `additional` sets the sbatch option 'gres', which "
                          "psy-agents sets itself — drop it from `additional` and set gres "
                          "instead\n")
    out = _dry_run(tmp_path, "--backend", "slurm", "--slurm-additional", "mail-type=END",
                   "--slurm-additional", "reservation=gpu-week",
                   "--slurm-additional", "dependency=afterok:41")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for line in ("#SBATCH --mail-type=END", "#SBATCH --reservation=gpu-week",
                 "#SBATCH --dependency=afterok:41", "#SBATCH --gpus-per-node=1"):
        assert line in lines


def test_apptainer_binds_put_the_shared_folders_where_the_worker_looks(tmp_path):
    out = _dry_run(tmp_path, "--backend", "slurm", "--slurm-apptainer-image", "/img/p.sif",
                   "--slurm-apptainer-binds", "/project/redsm5:/data",
                   "--slurm-apptainer-binds", "/scratch/runs:/runs",
                   "--slurm-data-dir", "/data", "--slurm-runs-dir", "/runs")
    assert out.returncode == 0, out.stderr
    srun = next(line for line in out.stdout.splitlines() if line.startswith("srun "))
    assert " apptainer exec --nv --bind /project/redsm5:/data --bind /scratch/runs:/runs " \
        "/img/p.sif python3 -u -m submitit.core._submit " in srun
    assert "launch worker --study default.joint.s0 --data-dir /data --runs-dir /runs " \
        "--index <array task index>" in out.stdout
    assert str(tmp_path / "data") not in out.stdout  # the launcher's data path is not used
