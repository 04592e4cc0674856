"""Checkpoints are written off the training thread, every k epochs, and always on a stop.

The training thread only copies the epoch's state to the CPU; a background thread writes
it while the next epoch trains. A write is held here until the next epoch has started: a
saver that wrote on the training thread would wait for it forever (the hold gives up after
HOLD_S and the test then fails on what it recorded, never on a time it measured).
"""

from __future__ import annotations

import threading

import pytest
import torch

from psy_agents.errors import Preempted
from psy_agents.training import checkpoint as ckpt
from psy_agents.training.checkpoint import BackgroundWriter
from psy_agents.training.config import TrainConfig
from psy_agents.training.run import run_training
from tests.training.helpers import HandData, sleep_pairs

DATA = HandData(train=sleep_pairs(30, 0), val=sleep_pairs(12, 1), test=())
HOLD_S = 20.0


def _cfg(source: str, **kw) -> TrainConfig:
    return TrainConfig(**{"agent": "share", "backbone": source, "max_length": 64, "stride": 16,
                          "lr": 2e-3, "epochs": 4, "patience": 4, "batch_size": 8,
                          "dropout": 0.1, "neg_ratio": 0.5, **kw})


def _spy_checkpoints(monkeypatch) -> list[int]:
    """The epochs whose checkpoint is written, in order."""
    written: list[int] = []
    real = ckpt.write_checkpoint

    def spy(directory, payload):
        real(directory, payload)
        written.append(payload["state"]["epoch"])

    monkeypatch.setattr(ckpt, "write_checkpoint", spy)
    return written


def test_training_goes_on_while_a_checkpoint_is_written(hand_tiny, tmp_path, monkeypatch):
    real_save = torch.save
    next_epoch_started = threading.Event()
    held: list[tuple[str, bool]] = []  # (writing thread, released by the next epoch)
    ended: list[int] = []

    def slow_save(obj, path, *args, **kwargs):
        if not held:  # epoch 0's checkpoint: held until epoch 1 trains
            held.append((threading.current_thread().name, next_epoch_started.wait(HOLD_S)))
        real_save(obj, path, *args, **kwargs)

    def stop_requested() -> bool:  # asked before every batch, on the training thread
        if ended:
            next_epoch_started.set()
        return False

    monkeypatch.setattr(ckpt.torch, "save", slow_save)  # the writer's torch (loaded lazily)
    written = _spy_checkpoints(monkeypatch)
    res = run_training(_cfg(hand_tiny, epochs=2), DATA, checkpoint_dir=tmp_path,
                       on_epoch=lambda record: ended.append(record.epoch),
                       stop_requested=stop_requested)
    assert held == [("checkpoint-writer", True)]
    # Every write is done when run_training returns: the last epoch's is on disk.
    assert written == [0, 1] and res.epochs_run == 2
    saved = torch.load(tmp_path / ckpt.CHECKPOINT, map_location="cpu", weights_only=False)
    assert saved["state"]["epoch"] == 1


@pytest.mark.slow  # two 4-epoch runs and a resume of the tiny model: ~30 s
def test_every_second_epoch_is_checkpointed_and_a_stop_saves_the_last_one(
        hand_tiny, tmp_path, monkeypatch):
    written = _spy_checkpoints(monkeypatch)
    straight = run_training(_cfg(hand_tiny), DATA, checkpoint_dir=tmp_path / "straight",
                            checkpoint_every=2)
    assert written == [0, 2, 3]  # epochs 0 and 2, and the last one

    written.clear()
    flag = {"stop": False}

    def after_epoch(record) -> None:  # a stop request arriving after epoch 1 (odd: unsaved)
        flag["stop"] = record.epoch == 1

    with pytest.raises(Preempted):
        run_training(_cfg(hand_tiny), DATA, checkpoint_dir=tmp_path / "stopped",
                     checkpoint_every=2, on_epoch=after_epoch,
                     stop_requested=lambda: flag["stop"])
    assert written == [0, 1]  # epoch 0, then epoch 1 on the stop
    resumed = run_training(_cfg(hand_tiny), DATA, checkpoint_dir=tmp_path / "stopped",
                           checkpoint_every=2)
    assert (resumed.resumed_from_epoch, resumed.epochs_run) == (1, 2)
    assert [h.value for h in resumed.history] == [h.value for h in straight.history]
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in straight.history]


def test_a_failed_write_is_raised_by_the_next_wait():
    writer = BackgroundWriter()

    def fail() -> None:
        raise OSError(28, "No space left on device")

    writer.submit(fail)
    with pytest.raises(OSError, match="No space left"):
        writer.wait()
    writer.wait()  # raised once
    with pytest.raises(ValueError, match="`checkpoint_every` is 0, but must be >= 1"):
        ckpt.EpochSaver(None, None, {}, checkpoint_dir=None, output_dir=None, keep="best",
                        every=0)
