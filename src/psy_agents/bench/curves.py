"""Records real learning curves for the simulated objective (``hpo/curves/<agent>.json``).

Usage: ``python -m psy_agents.bench.curves [--agents criteria,evidence,share,joint]
[--configs 6] [--epochs 8] [--seed 0] [--data-dir data/sample] [--out-dir DIR]``

Each agent trains ``--configs`` configurations drawn at random (Optuna's RandomSampler,
seeded) from its full search space with the tiny model on the sample data, every one for
all ``--epochs`` epochs (patience = epochs: no early stop, so a late bloomer shows), and
the per-epoch objective values on the val split are written with how they were recorded.
The window settings and the train fraction are held (``FIXED``) so a config's cost does
not depend on the draw and the recording fits ~20 CPU minutes on 2 shared cores: they
change an epoch's cost far more than the curve's shape. The file is rewritten after each
curve, so an interrupted recording keeps what it has. The simulated objective
(:mod:`psy_agents.hpo.simulated`) draws its trials' curves from these recordings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from psy_agents.data.prepare import prepare_data
from psy_agents.hpo import spaces
from psy_agents.hpo.simulated import CURVES_DIR
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training

FIXED: dict[str, Any] = {"max_length": 128, "stride": 32, "train_fraction": 0.5}


def sample_configs(agent: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` random configurations of ``agent``'s space (tiny backbone, no sampled epochs)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = [p for p in spaces.agent_space(agent, ("tiny",), 8, sample_epochs=False)
             if p.name not in FIXED]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [spaces.suggest(study.ask(), tuple(space)) for _ in range(n)]


def record_agent(agent: str, n: int, epochs: int, seed: int, data_dir: Path, out: Path,
                 cache_dir: Path) -> dict[str, Any]:
    """Train ``n`` sampled configs of ``agent`` for ``epochs`` epochs; writes their curves
    to ``out`` after each one and returns the record."""
    data = prepare_data(data_dir, write=False)
    rec: dict[str, Any] = {
        "agent": agent, "epochs": epochs, "seed": seed, "fixed": FIXED, "backbone": "tiny",
        "data": str(data_dir), "date": dt.date.today().isoformat(), "device": "cpu",
        "command": f"python -m psy_agents.bench.curves --agents {agent} --configs {n} "
                   f"--epochs {epochs} --seed {seed}",
        "curves": []}
    for i, params in enumerate(sample_configs(agent, n, seed)):
        cfg = TrainConfig.from_dict({**params, **FIXED, "agent": agent, "backbone": "tiny",
                                     "epochs": epochs, "patience": epochs, "seed": seed + i,
                                     "device": "cpu"}, source=f"curve {i} of {agent}")
        t0 = time.perf_counter()
        result = run_training(cfg, data, cache_dir=cache_dir)
        values = [round(float(r.value), 5) for r in result.history]
        print(f"{agent} #{i}: {time.perf_counter() - t0:.0f} s  {values}", flush=True)
        rec["curves"].append({"params": params, "seed": seed + i, "values": values})
        out.write_text(json.dumps(rec, indent=1) + "\n")
    return rec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m psy_agents.bench.curves",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--agents", default="criteria,evidence,share,joint")
    parser.add_argument("--configs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("data/sample"))
    parser.add_argument("--out-dir", type=Path, default=CURVES_DIR)
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/cache"))
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for agent in args.agents.split(","):
        record_agent(agent, args.configs, args.epochs, args.seed, args.data_dir,
                     args.out_dir / f"{agent}.json", args.cache_dir)


if __name__ == "__main__":
    main()
