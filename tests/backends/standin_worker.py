"""A stand-in for `launch worker` used by the backend tests (a real process, real signals).

Usage: python standin_worker.py RECORD_DIR MODE [--gpu-share K] --index I

Each start appends one JSON line to RECORD_DIR/idx-<I>.jsonl: the attempt number, pid,
CUDA_VISIBLE_DEVICES, whether PSY_STORAGE was inherited, PSY_EXTRA, the Slurm array task id,
the --gpu-share it was given, its parent's pid and the signal that stopped it (if any).
Modes:
  done        exit 0 at once
  sleep       start a grandchild `sleep`, then wait; SIGTERM/SIGUSR2 -> exit 75
  fail-once   first attempt exits 3 (a crash), later attempts exit 0
  requeue-once  first attempt exits 75 ("requeue me"), later attempts exit 0
  hang-once   first attempt waits for a signal (then exits 75), later attempts exit 0
  exit:A,B,.. exit with code A, B, ... by index (the code at index mod the list's length)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    record_dir, mode, flags = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    assert flags[-2] == "--index", flags
    index = flags[-1]
    share = flags[flags.index("--gpu-share") + 1] if "--gpu-share" in flags else None
    path = record_dir / f"idx-{index}.jsonl"
    attempt = len(path.read_text().splitlines()) + 1 if path.exists() else 1
    child = None
    if mode == "sleep":
        child = subprocess.Popen(["sleep", "600"])
    rec = {"index": int(index), "attempt": attempt, "pid": os.getpid(),
           "child_pid": child.pid if child else None,
           "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "has_storage": "PSY_STORAGE" in os.environ,
           "storage_len": len(os.environ.get("PSY_STORAGE", "")),
           "extra": os.environ.get("PSY_EXTRA"),
           "slurm_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
           "gpu_share": share, "ppid": os.getppid()}
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    if mode == "done" or (mode.endswith("-once") and attempt > 1):
        return 0
    if mode.startswith("exit:"):
        codes = [int(c) for c in mode[5:].split(",")]
        return codes[int(index) % len(codes)]
    if mode == "fail-once":
        return 3
    if mode == "requeue-once":
        return 75

    def stop(signum, _frame):
        with open(record_dir / f"sig-{index}.txt", "a") as fh:
            fh.write(signal.Signals(signum).name + "\n")
        sys.exit(75)

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, stop)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
