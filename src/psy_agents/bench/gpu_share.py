"""Trials/s with K training processes sharing one device (``launch bench train
--workers-per-gpu K``).

Usage (the child side, started by :func:`run_sweep`): ``python -m psy_agents.bench.gpu_share
CONFIG_JSON``.

For each K (1, 2, 4, ... up to the K asked for, :func:`ks_up_to`) the same trials — one
training run of the same configuration per seed — are dealt round-robin to K processes that
run at once, as K workers of one GPU slot do: each process takes ``1/K`` of the GPU's memory
(:func:`psy_agents.backends.slot.share_gpu_memory`) and ``1/K`` of the CPU cores as its
threads (unless ``OMP_NUM_THREADS`` is set, which every process then takes as it is). Every
process loads the data and runs one untimed warm-up trial (backbone, windows, first-step
costs) before the clock starts, then all start together; a measurement ends when the last process is done. K=1 is measured
first in the same sweep, and every K's trials/s is reported as a ratio to it. Without a GPU
the processes share the CPU cores, and the figures say so: they are not GPU figures.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psy_agents.backends.local import cpu_threads_env
from psy_agents.backends.slot import share_gpu_memory
from psy_agents.errors import PsyAgentsError
from psy_agents.lazy import lazy_import
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import resolve_device, run_training

torch = lazy_import("torch")
TAG = "@bench"  # marks the protocol lines a child prints among anything else on its stdout


@dataclass(frozen=True)
class ShareRun:
    """One measurement: ``trials`` trials run by ``k`` processes of ``threads`` CPU threads
    each (``OMP_NUM_THREADS``), all at once, in ``wall_s``."""

    k: int
    trials: int
    wall_s: float
    threads: int

    @property
    def trials_per_s(self) -> float:
        return self.trials / self.wall_s


@dataclass(frozen=True)
class Sweep:
    """The measurements of one sweep, K=1 first; ``device`` as the processes saw it."""

    device: str
    cpu_cores: int
    runs: tuple[ShareRun, ...]

    def ratio(self, run: ShareRun) -> float:
        """``run``'s trials/s over K=1's, measured in the same sweep."""
        return run.trials_per_s / self.runs[0].trials_per_s

    def lines(self) -> list[str]:
        """The figures as printed: device first, then one line per K."""
        if self.device == "cpu":
            where = (f"device cpu: no GPU visible, so the K processes share this machine's "
                     f"{self.cpu_cores} CPU cores; these are CPU figures, not what K workers "
                     "per GPU give on a GPU")
        else:
            where = f"device {self.device}: K processes share it, each with 1/K of its memory"
        rows = [f"K={r.k:<3d} {r.trials_per_s:8.3f} trials/s  {r.trials} trials in "
                f"{r.wall_s:7.2f} s  ({r.threads} CPU thread(s) each)  "
                f"{self.ratio(r):5.2f}x K=1" for r in self.runs]
        return [where, *rows]

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "cpu_cores": self.cpu_cores,
                "runs": [{"k": r.k, "trials": r.trials, "wall_s": r.wall_s,
                          "threads": r.threads,
                          "trials_per_s": r.trials_per_s, "ratio": self.ratio(r)}
                         for r in self.runs]}


def ks_up_to(k: int) -> tuple[int, ...]:
    """``1, 2, 4, ...`` below ``k``, then ``k``: ``ks_up_to(4) == (1, 2, 4)``."""
    out = [1]
    while out[-1] * 2 < k:
        out.append(out[-1] * 2)
    return tuple(out + [k]) if k > 1 else (1,)


def deal(seeds: Sequence[int], k: int) -> list[list[int]]:
    """``seeds`` dealt round-robin to ``k`` processes (the same trials for every K)."""
    return [list(seeds[j::k]) for j in range(k)]


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_sweep(cfg: TrainConfig, data: Any, *, ks: Sequence[int], trials: int,
              cache_dir: Path) -> Sweep:
    """Measure ``trials`` training runs of ``cfg`` (seeds ``cfg.seed`` onwards) on ``data``
    for each K in ``ks`` (which starts with 1).

    Raises:
        PsyAgentsError: a process failed; the message holds the last line it wrote.
    """
    if ks[0] != 1:
        raise ValueError(f"The first K is {ks[0]}, but must be 1 (the baseline)")
    seeds = [cfg.seed + i for i in range(trials)]
    runs, device = [], "cpu"
    with tempfile.TemporaryDirectory(prefix="psy-bench-share-") as tmp:
        data_path = Path(tmp) / "data.pkl"
        data_path.write_bytes(pickle.dumps(data))
        for k in ks:
            env = {**os.environ, **cpu_threads_env(k)}
            wall, device, ran = _measure(k, deal(seeds, k), cfg, env, data_path, cache_dir,
                                         Path(tmp))
            runs.append(ShareRun(k, ran, wall, int(env.get("OMP_NUM_THREADS", _cores()))))
    return Sweep(device, _cores(), tuple(runs))


def _measure(k: int, shares: list[list[int]], cfg: TrainConfig, env: dict[str, str],
             data_path: Path, cache_dir: Path, tmp: Path) -> tuple[float, str, int]:
    """(seconds from the common start until the last of ``k`` processes is done, device,
    trials the processes say they ran)."""
    procs = []
    for j, seeds in enumerate(shares):
        config = tmp / f"k{k}-{j}.json"
        config.write_text(json.dumps({"cfg": cfg.to_dict(), "seeds": seeds, "k": k,
                                      "data": str(data_path), "cache_dir": str(cache_dir)}))
        with open(tmp / f"k{k}-{j}.err", "wb") as err:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "psy_agents.bench.gpu_share", str(config)], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True))
    try:
        devices = [_expect(p, "ready", tmp / f"k{k}-{j}.err") for j, p in enumerate(procs)]
        start = time.perf_counter()
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        ran = sum(int(_expect(p, "done", tmp / f"k{k}-{j}.err")) for j, p in enumerate(procs))
        return time.perf_counter() - start, devices[0], ran
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def _expect(proc: subprocess.Popen, word: str, err: Path) -> str:
    """The rest of ``proc``'s next protocol line (``@bench <word> ...``); anything else it
    prints is passed over."""
    for line in iter(proc.stdout.readline, ""):
        if line.startswith(f"{TAG} {word}"):
            return line[len(TAG) + len(word) + 1:].strip()
    proc.wait()
    lines = err.read_text(errors="replace").strip().splitlines()
    raise PsyAgentsError(f"a benchmark process stopped with exit code {proc.returncode}: "
                         f"{lines[-1] if lines else 'no output'}",
                         "run `launch bench train` without --workers-per-gpu to see "
                         "whether one training run works with these settings")


def _child(config_path: str) -> int:
    """One process of a measurement: warm up, say ``ready <device>``, wait for ``go``,
    run its trials, say ``done``."""
    spec = json.loads(Path(config_path).read_text())
    share_gpu_memory(spec["k"])
    cfg = TrainConfig.from_dict(spec["cfg"], source="bench config")
    data = pickle.loads(Path(spec["data"]).read_bytes())
    cache = Path(spec["cache_dir"])
    # One untimed run first: backbone, windows and the one-off costs of a first training
    # step (allocator, kernel choice) are not what K changes.
    run_training(cfg, data, cache_dir=cache)
    device = resolve_device(cfg.device)
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    print(f"{TAG} ready {device}", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    for seed in spec["seeds"]:
        run_training(TrainConfig.from_dict({**spec["cfg"], "seed": seed}, source="bench"),
                     data, cache_dir=cache)
    print(f"{TAG} done {len(spec['seeds'])}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process by _measure
    sys.exit(_child(sys.argv[1]))
