"""A trial leaves nothing behind: after an out-of-memory error its model and optimizer are
gone before the next trial starts, and every CUDA allocation failure counts as out of memory.

Why this matters: optuna keeps the exception a trial raised in a reference cycle, and that
exception's traceback holds every frame of the run (model, optimizer, batches). Until a full
garbage collection, which nothing forces, the next trial then starts with the previous
trial's GPU memory still allocated, runs out of memory too, and is recorded as PRUNED.
"""

from __future__ import annotations

import gc
import os
import signal
import traceback
import weakref

import pytest
import torch
from click.testing import CliRunner
from optuna.trial import TrialState

from psy_agents.data.synth import write_synthetic
from psy_agents.hpo import objective as objective_module
from psy_agents.hpo.connect import open_storage
from psy_agents.hpo.objective import (
    ALLOCATION_FAILURES,
    classify,
    drop_frames,
    release_memory,
)
from psy_agents.hpo.spec import CampaignOverrides, create_campaign
from psy_agents.hpo.stages import StageConfig
from psy_agents.hpo.worker import Worker, WorkerConfig
from psy_agents.settings import Settings
from psy_agents.training import run as run_module

NAME = "mem.evidence.s1"
# One epoch of several batches: the first trial's error comes in its second step, after the
# model, the optimizer and the optimizer's state exist.
TRAIN = {"max_length": 64, "stride": 16, "batch_size": 8, "grad_accum_steps": 1,
         "neg_ratio": 0.5, "device": "cpu"}


@pytest.mark.parametrize("message", [
    "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.19 GiB total capacity)",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "cuDNN error: CUDNN_STATUS_NOT_ENOUGH_MEMORY",
    "cuFFT error: CUFFT_ALLOC_FAILED",
    "cusolver error: CUSOLVER_STATUS_ALLOC_FAILED, when calling `cusolverDnCreate(handle)`",
    "CUDA error: CUSPARSE_STATUS_ALLOC_FAILED when calling `cusparseCreate(handle)`",
])
def test_every_cuda_allocation_failure_is_out_of_memory(message):
    assert any(m in message for m in ALLOCATION_FAILURES)
    action, reason = classify(RuntimeError(message))
    assert (action, reason.splitlines()[0]) == ("prune", f"out of memory: RuntimeError: "
                                                         f"{message.splitlines()[0]}")


@pytest.mark.parametrize("exc", [
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x128 and 64x2)"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"),
    ValueError("CUDA out of memory"),  # the message counts only on a RuntimeError
])
def test_other_errors_stay_failures(exc):
    assert classify(exc)[0] == "fail"


class Big:
    """Stands in for a model, an optimizer or a batch: something weakly referenceable."""


def test_a_kept_error_no_longer_holds_the_locals_of_the_run_it_ended():
    refs = []

    def train():
        batch = Big()
        refs.append(weakref.ref(batch))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    gc.disable()  # only the frames' references count, not a collection
    try:
        try:
            try:
                train()
            except RuntimeError as exc:
                raise ValueError("while handling it") from exc
        except ValueError as exc:
            kept = exc
        assert refs[0]() is not None  # the traceback holds train()'s frame and its locals
        drop_frames(kept)
        assert refs[0]() is None
        assert [f.name for f in traceback.extract_tb(kept.__cause__.__traceback__)] == [
            "test_a_kept_error_no_longer_holds_the_locals_of_the_run_it_ended", "train"]
    finally:
        gc.enable()


def test_the_cuda_cache_is_emptied_only_where_cuda_is_initialized(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    release_memory()  # emptying would initialize CUDA for nothing
    assert emptied == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    release_memory()
    assert emptied == [True]


def test_the_worker_sets_expandable_segments_unless_the_user_did(monkeypatch):
    from psy_agents.backends import slot
    from psy_agents.cli.main import cli

    seen = []
    monkeypatch.setattr(slot, "share_gpu_memory",
                        lambda k: seen.append(os.environ.get("PYTORCH_CUDA_ALLOC_CONF")))
    monkeypatch.setattr(Worker, "run", lambda self: 0)
    command = ["worker", "--study", NAME, "--index", "0", "--storage", "sqlite:///x.db"]
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert CliRunner().invoke(cli, command).exit_code == 0
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert CliRunner().invoke(cli, command).exit_code == 0
    # Set before the GPU share, the first thing that may initialize CUDA.
    assert seen == ["expandable_segments:True", "max_split_size_mb:128"]


@pytest.mark.slow  # two one-epoch trials of the tiny model: ~10 s
def test_an_out_of_memory_trial_frees_its_model_before_the_next_trial(tmp_path, monkeypatch):
    data, runs = tmp_path / "data", tmp_path / "runs"
    write_synthetic(data, n_posts=30, seed=0)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    stage = StageConfig(name="s1", trials=2, epochs=1, patience=1, pruner="none")
    create_campaign(url, experiment="mem", agents=["evidence"], stages=[stage], n_workers=1,
                    overrides=CampaignOverrides(objective="train", train=TRAIN), data_dir=data)

    refs: list[tuple[weakref.ref, weakref.ref]] = []  # each trial's model and optimizer
    dead_at_second_start: list[bool] = []
    real_prepare, real_call = run_module.prepare, objective_module.Objective.__call__

    def prepare(*args, **kwargs):
        run = real_prepare(*args, **kwargs)
        refs.append((weakref.ref(run.model), weakref.ref(run.optimizer)))
        if len(refs) == 1:  # the first trial runs out of memory in its second step
            steps = []

            def out_of_memory(module, _args, _output):
                steps.append(module.training)
                if steps.count(True) == 2:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate "
                                                      "2.00 GiB")
            run.model.register_forward_hook(out_of_memory)
        return run

    def call(self, trial):
        if trial.number == 1:  # no collection here: whatever the worker left is still there
            dead_at_second_start.extend(ref() is None for ref in refs[0])
        return real_call(self, trial)

    monkeypatch.setattr(run_module, "prepare", prepare)
    monkeypatch.setattr(objective_module.Objective, "__call__", call)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    # Only the worker collects cycles: an automatic collection would hide a trial that
    # leaves its run to the next full collection.
    gc.disable()
    try:
        code = Worker(WorkerConfig(settings=Settings(storage=url, runs_dir=runs, data_dir=data,
                                                     cache_dir=tmp_path / "cache"),
                                   studies=(NAME,), index=0)).run()
    finally:
        gc.enable()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    import optuna

    oom, second = optuna.load_study(study_name=NAME, storage=open_storage(url)).get_trials()
    assert code == 0 and len(refs) == 2
    assert oom.state == TrialState.PRUNED, oom.user_attrs
    assert oom.user_attrs["note"] == ("out of memory: OutOfMemoryError: CUDA out of memory. "
                                      "Tried to allocate 2.00 GiB")
    assert second.state == TrialState.COMPLETE, second.user_attrs
    assert dead_at_second_start == [True, True]  # the first trial's model, its optimizer
