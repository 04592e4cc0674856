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
