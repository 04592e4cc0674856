"""A real-training trial SIGKILLed mid-epoch resumes from its checkpoint and ends exactly as
an uninterrupted run of the same seed.

Two one-trial campaigns of the evidence agent (tiny backbone, real training, 3 epochs) run
side by side, each with its own SQLite storage and runs folder: the *reference* runs
undisturbed; the *victim*'s worker is SIGKILLed as soon as its trial has reported epoch 0
and epoch 0's checkpoint (written off the training thread) is on disk, before epoch 1's
(checked on the checkpoint file), with epoch 1 in flight. A new worker (what the local backend starts after a crash) fails the
trial as stale once the grace period (3 s) has passed, runs its retry, and that retry must
resume after epoch 0 — it reports epochs 1 and 2 only — and reach the reference's numbers.

Tolerance: none. Both campaigns sample the same params (the sampler seed depends on the
study name, the worker index and the trials seen; a retry keeps its params), train with the
same seed on the same CPU with one thread, and a checkpoint restores model, optimizer,
scheduler and RNG states bit for bit (each epoch also reseeds dropout and its batch order
from the seed and the epoch number). A resumed epoch is the same sequence of float
operations as the uninterrupted one, so its values and weights are equal, not just close;
any difference is a resume bug.

The data is `launch data synth --n-posts 120` (the project's own generator) rather than
data/sample: an epoch of the sample takes 10-30 s on this 2-core box. With 30 posts an
epoch took ~1 s on an idle CI box, less than the poll for "epoch 0 reported and
checkpointed" could see before epoch 1's checkpoint replaced it (the kill then landed after
epoch 1: seen once in CI); 120 posts keep each epoch several times longer than that poll.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from psy_agents.data.synth import write_synthetic
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig
from psy_agents.paths import checkpoint_dir, model_dir
from psy_agents.training.checkpoint import CHECKPOINT
from tests.backends.helpers import wait_until
from tests.reliability.helpers import FAST_HEARTBEAT, launch_argv, launch_env

pytestmark = pytest.mark.slow
EPOCHS = 3
NAME = "sk.evidence.s1"
# Held so every trial costs the same few seconds an epoch; dropout > 0 so that a resume
# with the wrong RNG state shows. What is left (weight decay, warmup, schedule) is sampled.
FIXED = {"max_length": 128, "stride": 32, "batch_size": 8, "grad_accum_steps": 1,
         "lr": 3e-3, "neg_ratio": 0.5, "dropout": 0.1, "head_layers": 1, "head_hidden": 128,
         "device": "cpu"}
# One thread: the same reductions in the same order in every worker process.
WORKER_ENV = {**FAST_HEARTBEAT, "OMP_NUM_THREADS": "1"}


def _campaign(root: Path, data: Path) -> str:
    url = f"sqlite:///{root / 'optuna.db'}"
    stage = StageConfig(name="s1", trials=1, epochs=EPOCHS, patience=EPOCHS, pruner="none",
                        keep_models=1)
    create_campaign(url, experiment="sk", agents=["evidence"], stages=[stage], n_workers=1,
                    overrides=CampaignOverrides(objective="train", train=FIXED), data_dir=data)
    return url


def _worker(root: Path, url: str, data: Path, cache: Path, log: str) -> subprocess.Popen:
    with open(root / log, "w") as out:
        return subprocess.Popen(
            launch_argv("worker", "--study", NAME, "--index", "0", "--storage", url,
                        "--data-dir", str(data), "--runs-dir", str(root / "runs"),
                        "--cache-dir", str(cache)),
            cwd=root, env=launch_env(WORKER_ENV), stdout=out, stderr=subprocess.STDOUT)


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=NAME, storage=open_storage(url)).get_trials()


def _weights(folder: Path) -> dict:
    """Every tensor of a kept model folder: the encoder's and the heads'."""
    import torch
    from safetensors.torch import load_file

    encoder = load_file(folder / "encoder0" / "model.safetensors")
    heads = torch.load(folder / "heads.pt", map_location="cpu")
    return {**{f"encoder.{k}": v for k, v in encoder.items()}, **heads}


def test_a_trial_killed_mid_epoch_resumes_from_its_checkpoint_as_if_never_killed(tmp_path):
    import torch

    data, cache = tmp_path / "data", tmp_path / "cache"
    write_synthetic(data, n_posts=120, seed=0)
    ref_root, vic_root = tmp_path / "reference", tmp_path / "victim"
    ref_url, vic_url = _campaign(ref_root, data), _campaign(vic_root, data)
    ref = _worker(ref_root, ref_url, data, cache, "worker.log")
    victim = _worker(vic_root, vic_url, data, cache, "killed.log")
    restarted = None
    try:
        checkpoint = checkpoint_dir(vic_root / "runs", "sk", NAME, 0) / CHECKPOINT

        def epoch_0_checkpointed():
            running = [t for t in _trials(vic_url) if t.state == TrialState.RUNNING]
            reported = running and running[0].intermediate_values
            return running[0] if reported and checkpoint.exists() else None

        wait_until(epoch_0_checkpointed, 240, "the victim's epoch 0", step=0.1)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        # Killed after epoch 0's checkpoint and report, before epoch 1's checkpoint.
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        (killed,) = _trials(vic_url)
        assert saved["state"]["epoch"] == 0 and killed.state == TrialState.RUNNING
        assert list(killed.intermediate_values) == [0], killed.intermediate_values
        restarted = _worker(vic_root, vic_url, data, cache, "restarted.log")
        codes = [ref.wait(timeout=300), restarted.wait(timeout=300)]
    finally:
        for proc in (ref, victim, restarted):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("*/*.log")))
    assert codes == [0, 0], logs[-3000:]

    (reference,) = _trials(ref_url)
    killed, retry = _trials(vic_url)
    assert reference.state == TrialState.COMPLETE and sorted(reference.intermediate_values) == [
        0, 1, 2]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["fail_reason"].startswith("no heartbeat for over 3 s"), killed
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["original_trial"] == 0
    assert retry.params == killed.params == reference.params
    # Resumed from epoch 0's checkpoint: only epochs 1 and 2 were computed again.
    assert retry.user_attrs["resumed_from_epoch"] == 0
    assert retry.user_attrs["epochs_run"] == EPOCHS - 1
    assert sorted(retry.intermediate_values) == [1, 2]
    # ... and they, the final value and the kept best-epoch model equal the reference's.
    assert {**killed.intermediate_values, **retry.intermediate_values} == \
        reference.intermediate_values
    assert retry.value == reference.value
    for key in ("best_epoch", "metrics"):
        assert retry.user_attrs[key] == reference.user_attrs[key], key
    resumed = _weights(model_dir(vic_root / "runs", "sk", NAME, retry.number))
    straight = _weights(model_dir(ref_root / "runs", "sk", NAME, reference.number))
    assert resumed.keys() == straight.keys()
    assert [k for k in straight if not torch.equal(resumed[k], straight[k])] == []
