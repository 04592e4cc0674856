"""`launch bench train` end to end on a few posts of data/sample with the tiny model.

Checks what it prints and writes, and that the JSON's figures agree with each other and
with what was printed; not the speed (that is the benchmark's job, run on purpose).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys


def test_bench_train_prints_both_paddings_and_writes_consistent_json(tmp_path, repo_root):
    out = tmp_path / "train.json"
    env = {**os.environ, "PSY_DATA_DIR": str(repo_root / "data" / "sample"),
           "PSY_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "psy_agents.cli.main", "bench", "train",
                           "--agent", "evidence", "--limit-posts", "6", "--max-length", "128",
                           "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert (data["agent"], data["backbone"], data["max_length"]) == ("evidence", "tiny", 128)
    dyn, pad = data["dynamic"], data["pad_to_max"]
    assert dyn["train_samples"] == pad["train_samples"] > 0  # same windows, two paddings
    assert data["epoch_s"] == dyn["train_s"] + dyn["eval_s"]
    ratio = re.search(r"pad-to-max / dynamic time: train ([\d.]+)x", proc.stdout)
    assert ratio and float(ratio.group(1)) == round(pad["train_s"] / dyn["train_s"], 2)
    for name, row in (("dynamic", dyn), ("pad-to-max", pad)):
        line = next(x for x in proc.stdout.splitlines() if x.startswith(name))
        assert f"{row['train_samples'] / row['train_s']:8.1f} samples/s" in line


def test_bench_train_workers_per_gpu_measures_each_k_on_the_same_trials(tmp_path, repo_root):
    out = tmp_path / "share.json"
    env = {**os.environ, "PSY_DATA_DIR": str(repo_root / "data" / "sample"),
           "PSY_CACHE_DIR": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1"}  # the user's setting: every process takes it as it is
    proc = subprocess.run([sys.executable, "-m", "psy_agents.cli.main", "bench", "train",
                           "--agent", "criteria", "--limit-posts", "3", "--max-length", "64",
                           "--workers-per-gpu", "2", "--trials", "2", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert (data["kind"], data["agent"], data["trials"]) == (
        "bench train workers-per-gpu", "criteria", 2)
    runs = data["runs"]
    assert [(r["k"], r["trials"]) for r in runs] == [(1, 2), (2, 2)]  # the same work per K
    assert data["device"] == "cpu"  # no GPU here, and it says so, with the core count
    assert f"device cpu: no GPU visible, so the K processes share this machine's " \
           f"{data['cpu_cores']} CPU cores" in proc.stdout
    for run in runs:
        assert run["trials_per_s"] == run["trials"] / run["wall_s"]
        assert run["ratio"] == run["trials_per_s"] / runs[0]["trials_per_s"]
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"K={run['k']} "))
        assert f"{run['trials_per_s']:8.3f} trials/s" in line
        assert run["threads"] == 1 and "(1 CPU thread(s) each)" in line
        assert line.endswith(f"{run['ratio']:5.2f}x K=1")


def test_ks_double_up_to_the_one_asked_for_and_trials_are_dealt_evenly():
    from psy_agents.bench.gpu_share import deal, ks_up_to

    assert [ks_up_to(k) for k in (1, 2, 3, 4, 6)] == [(1,), (1, 2), (1, 2, 3), (1, 2, 4),
                                                      (1, 2, 4, 6)]
    assert deal([10, 11, 12, 13, 14], 2) == [[10, 12, 14], [11, 13]]
    assert sorted(sum(deal(list(range(8)), 4), [])) == list(range(8))
