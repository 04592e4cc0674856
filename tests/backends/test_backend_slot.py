"""Several workers per GPU slot: the exit-code combination, the GPU memory share, and
`run_slot` with real child processes and real signals (the stand-in worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from psy_agents.backends.slot import (
    combine_exit_codes,
    nvidia_visible,
    run_slot,
    share_gpu_memory,
    slot_indices,
)
from tests.backends.helpers import pid_alive, records, standin_argv, wait_until


@pytest.mark.parametrize(("codes", "combined"), [
    ([0, 0], 0),
    ([0, 75], 75),          # one process asked to be requeued: restart the slot
    ([2, 75], 75),          # ... even beside a user error
    ([0, 2], 2),            # a user error fails the slot (k8s fails the index)
    ([3, 2], 2),
    ([0, 3, 1], 3),         # a crash: the first failure's code
    ([-9, 0], 137),         # killed by SIGKILL, as a shell reports it
])
def test_exit_codes_combine(codes, combined):
    assert combine_exit_codes(codes) == combined


def test_slot_i_runs_indices_i_times_k_onwards():
    assert slot_indices(0, 2) == [0, 1] and slot_indices(3, 4) == [12, 13, 14, 15]


class FakeCuda:
    """Stands in for torch.cuda: records the memory fractions set."""

    def __init__(self, available: bool, count: int = 2) -> None:
        self.available, self.count, self.calls = available, count, []

    def is_available(self) -> bool:
        return self.available

    def device_count(self) -> int:
        return self.count

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None:
        self.calls.append((fraction, device))


def test_each_process_gets_one_kth_of_every_visible_gpu():
    cuda = FakeCuda(available=True)
    assert share_gpu_memory(4, cuda) == 0.25
    assert cuda.calls == [(0.25, 0), (0.25, 1)]


@pytest.mark.parametrize(("k", "available"), [(1, True), (2, False)])
def test_no_share_is_set_for_one_worker_or_without_cuda(k, available):
    cuda = FakeCuda(available=available)
    assert share_gpu_memory(k, cuda) is None
    assert cuda.calls == []


def test_without_a_gpu_torch_is_not_even_imported():
    code = ("import sys; from psy_agents.backends.slot import share_gpu_memory; "
            "print(share_gpu_memory(2), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.stdout.split() == ["None", "False"], out.stderr
    assert not nvidia_visible({"CUDA_VISIBLE_DEVICES": "-1"})


@pytest.mark.parametrize(("mode", "combined"), [("exit:0,2", 2), ("exit:75,2", 75),
                                                ("exit:0,0", 0), ("exit:0,3", 3)])
def test_run_slot_starts_k_children_and_combines_their_codes(tmp_path, mode, combined):
    rec = tmp_path / "rec"
    rec.mkdir()
    assert run_slot(standin_argv(rec, mode), 2, 1, env={"PSY_EXTRA": "x"}) == combined
    children = [records(rec, i) for i in (2, 3)]  # slot 1 of K=2 runs indices 2 and 3
    assert [(r[0]["gpu_share"], r[0]["extra"], r[0]["ppid"]) for r in children] == \
        [("2", "x", os.getpid())] * 2
    assert records(rec, 0) == records(rec, 1) == []


SLOT = textwrap.dedent("""
    import sys
    from psy_agents.backends.slot import run_slot
    sys.exit(run_slot(sys.argv[2:], int(sys.argv[1]), 0))
""")


def _start_slot(tmp_path: Path, k: int = 2) -> tuple[subprocess.Popen, Path]:
    rec = tmp_path / "rec"
    rec.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SLOT, str(k),
                             *standin_argv(rec, "hang-once")])
    wait_until(lambda: all(records(rec, i) for i in range(k)), 30, "both children to start")
    return proc, rec


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["TERM", "USR2"])
def test_a_signal_to_the_slot_reaches_every_child_and_the_slot_asks_for_a_requeue(
        tmp_path, sig):
    proc, rec = _start_slot(tmp_path)
    try:
        proc.send_signal(sig)  # to the slot process alone, as a pod's SIGTERM is
        assert proc.wait(timeout=30) == 75
    finally:
        if proc.poll() is None:
            proc.kill()
    for i in range(2):
        assert (rec / f"sig-{i}.txt").read_text() == f"{sig.name}\n"
        assert not pid_alive(records(rec, i)[0]["pid"])


def test_children_of_a_killed_slot_are_stopped_not_orphaned(tmp_path):
    proc, rec = _start_slot(tmp_path)
    proc.kill()  # SIGKILL: the slot cannot forward anything
    proc.wait(timeout=10)
    for i in range(2):
        wait_until(lambda i=i: (rec / f"sig-{i}.txt").exists(), 10, f"child {i} to get SIGTERM")
        wait_until(lambda i=i: not pid_alive(records(rec, i)[0]["pid"]), 10,
                   f"child {i} to exit")
