"""`launch bench train` end to end on a few posts of data/sample with the tiny model.

Checks what it prints and writes, and that the JSON's figures agree with each other and
with what was printed (the per-step table too: windows/s, host/device ms per step, host
syncs per step, MFU); not the speed (that is the benchmark's job, run on purpose).
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
                           "--peak-tflops", "0.5", "--sync-steps", "3", "--out", str(out)],
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
    _check_step_figures(data, proc.stdout)


def _check_step_figures(data: dict, stdout: str) -> None:
    """The per-step figures: of the dynamic epoch, consistent, and n/a where a CPU has none."""
    steps, dyn = data["steps"], data["dynamic"]
    assert (steps["device_name"], steps["precision"]) == ("cpu", "fp32")
    assert steps["windows"] == dyn["train_samples"] and steps["train_s"] == dyn["train_s"]
    assert steps["windows_per_s"] == dyn["train_samples"] / dyn["train_s"]
    assert steps["steps"] >= 1 and steps["host_ms_per_step"] > 0
    assert steps["device_ms_per_step"] is None  # a CPU runs each op itself
    # no sync inside a step; the epoch's loss is read once, after the last counted step
    assert (steps["sync_steps"], steps["syncs_per_step"], steps["syncs_after_steps"]) == (
        min(3, steps["steps"]), 0.0, 1)
    flops = 6 * steps["nonembedding_params"] * steps["tokens"]
    assert steps["tflops"] == flops / steps["train_s"] / 1e12 > 0
    assert steps["peak_source"] == "--peak-tflops" and steps["peak_tflops"] == 0.5
    assert steps["mfu"] == steps["tflops"] / 0.5
    header, row = stdout.splitlines()[-2:]
    assert header.split() == ["agent", "backbone", "windows/s", "host", "ms/step", "device",
                              "ms/step", "syncs/step", "TFLOPS", "MFU"]
    assert row.split() == ["evidence", "tiny", f"{steps['windows_per_s']:.1f}",
                           f"{steps['host_ms_per_step']:.2f}", "n/a", "0.00",
                           f"{steps['tflops']:.4f}", f"{steps['mfu']:.2%}"]


def test_peaks_come_from_the_table_by_device_name_and_precision():
    from psy_agents.bench.train_steps import mfu, peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16")[0] == 989.4  # SXM
    assert peak_tflops("NVIDIA H100 PCIe", "bf16")[0] == 756.5
    assert peak_tflops("NVIDIA H200", "tf32")[0] == 494.7
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32")[0] == 19.5
    assert peak_tflops("NVIDIA L40S", "bf16")[0] == 362.1
    assert peak_tflops("NVIDIA A10", "bf16")[0] == 125.0  # not the A100's
    assert peak_tflops("Tesla V100-SXM2-32GB", "bf16") == (None, "V100 SXM2 has no bf16 figure")
    assert peak_tflops("NVIDIA H100 NVL", "bf16") == (
        None, "no peak known for 'NVIDIA H100 NVL'")  # not guessed from the SXM part
    assert peak_tflops("cpu", "fp32")[0] is None
    assert mfu(10.0, None) is None and mfu(10.0, 40.0) == 0.25


def test_out_takes_one_agent_and_backbone(tmp_path, repo_root):
    env = {**os.environ, "PSY_DATA_DIR": str(repo_root / "data" / "sample"),
           "PSY_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "psy_agents.cli.main", "bench", "train",
                           "--agent", "evidence", "--agent", "share", "--out",
                           str(tmp_path / "x.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert ("--out and --workers-per-gpu take one --agent and one --backbone, not 2 pairs: "
            "run once per pair") in proc.stderr
    assert not (tmp_path / "x.json").exists()


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
