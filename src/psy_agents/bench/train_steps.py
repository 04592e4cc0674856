"""Step-level figures of ``launch bench train``: windows/s, host and device time per step,
host syncs per step, and model FLOPs utilization (MFU) against the device's peak.

- **Host time** per step: wall time of the Python code of a step (collate, copies, forward,
  backward, optimizer), measured on the host. With no sync in a step the host runs ahead of
  a GPU, so this is the time it takes to *launch* the step.
- **Device time** per step (CUDA only): CUDA-event time on the stream from a step's first
  to its last kernel, read once after the epoch. It includes any gaps where the GPU waited
  for the host; host time well above it means the host is the limit. On a CPU the host runs
  every op itself: device time is n/a.
- **Host syncs** per step: :func:`psy_agents.training.syncs.count_syncs` over the first
  steps of a further epoch (``"cuda"`` mode on a GPU, ``"python"`` elsewhere), split into
  syncs inside steps and reads after the last step (the epoch's loss).
- **MFU** = achieved FLOP/s / peak FLOP/s, with FLOPs per step ≈ 6 × N × tokens (2 per
  parameter per token forward, 4 backward; Kaplan et al. 2020), N = non-embedding
  parameters (a lookup is no matmul), tokens = the batch's non-padding tokens. It leaves
  out attention's T² term, counts the span branch (the joint agent's second encoder, the
  GRU) on every window though it runs on the span rows only, and counts padding as no
  work: a rough figure, for comparing runs and devices, not an exact count.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from psy_agents.lazy import lazy_import
from psy_agents.training.loop import Run, train_epoch
from psy_agents.training.syncs import SyncCounter, count_syncs, sync_mode

torch = lazy_import("torch")

# Dense (no sparsity) peak TFLOPS per precision, from the vendors' data sheets (NVIDIA
# A100 / H100 / H200 / L40S / L4 / A10 / V100 data sheets; the "with sparsity" figures
# halved). The first pattern that matches ``torch.cuda.get_device_name()`` wins; a device
# that none matches has no peak (pass --peak-tflops). "tf32" is the fp32 path with TF32
# matmuls on, which training turns on for CUDA; V100 has neither bf16 nor TF32.
PEAK_TFLOPS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"H100.*PCIe", "H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    (r"H100(?!.*NVL)", "H100 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"H200(?!.*NVL)", "H200 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"A100", "A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", "L40S", {"bf16": 362.1, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL4\b", "L4", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bA10\b", "A10", {"bf16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"V100.*PCIE", "V100 PCIe", {"fp32": 14.0}),
    (r"V100", "V100 SXM2", {"fp32": 15.7}),
)


def peak_tflops(device_name: str, precision: str) -> tuple[float | None, str]:
    """``(peak TFLOPS, which table row)`` of a device for ``precision``; ``(None, why)``
    when the table has no figure (a CPU, an unknown GPU, a precision it lacks)."""
    for pattern, name, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            if precision in peaks:
                return peaks[precision], f"{name} {precision} (vendor data sheet)"
            return None, f"{name} has no {precision} figure"
    return None, f"no peak known for {device_name!r}"


def precision_of(run: Run) -> str:
    """What the matmuls run in: bf16 (autocast on CUDA), tf32 (fp32 on CUDA), else fp32."""
    if not str(run.device).startswith("cuda"):
        return "fp32"
    return "bf16" if run.cfg.bf16 else "tf32"


def device_name(device: str) -> str:
    return torch.cuda.get_device_name(device) if str(device).startswith("cuda") else "cpu"


def non_embedding_params(model: Any) -> int:
    """Parameters of ``model`` outside its ``nn.Embedding`` modules (counted once)."""
    embedded = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedded)


def train_flops(params: int, tokens: int) -> float:
    """≈ 6 × parameters × tokens (see the module docstring)."""
    return 6.0 * params * tokens


def mfu(tflops: float, peak: float | None) -> float | None:
    """Achieved / peak TFLOPS, or None without a peak."""
    return None if peak is None else tflops / peak


class StepTimer:
    """A step hook: host time per step, CUDA-event time per step on a GPU, and the windows
    and non-padding tokens of the steps. Reads the device once, in :meth:`device_ms`."""

    def __init__(self, device: str) -> None:
        self.cuda = str(device).startswith("cuda")
        self.steps = self.windows = self.tokens = 0
        self.host_s = 0.0
        self._t0 = 0.0
        self._events: list[tuple[Any, Any]] = []

    def begin(self) -> None:
        self._t0 = time.perf_counter()
        if self.cuda:
            self._events.append((torch.cuda.Event(enable_timing=True),
                                 torch.cuda.Event(enable_timing=True)))
            self._events[-1][0].record()

    def end(self, windows: int, tokens: int) -> None:
        if self.cuda:
            self._events[-1][1].record()
        self.host_s += time.perf_counter() - self._t0
        self.steps += 1
        self.windows += windows
        self.tokens += tokens

    def device_ms(self) -> float | None:
        """Mean CUDA-event ms per step (one synchronize), or None off CUDA."""
        if not self.cuda or not self._events:
            return None
        torch.cuda.synchronize()
        return sum(a.elapsed_time(b) for a, b in self._events) / len(self._events)


class SyncMarks:
    """A step hook that splits a counter's events into those inside steps and the rest."""

    def __init__(self, counter: SyncCounter) -> None:
        self.counter = counter
        self.steps = self.inside = 0
        self._at = 0

    def begin(self) -> None:
        self._at = len(self.counter)

    def end(self, windows: int, tokens: int) -> None:
        del windows, tokens
        self.inside += len(self.counter) - self._at
        self.steps += 1


@dataclass(frozen=True)
class StepFigures:
    """One agent and backbone on one device (see the module docstring for each figure)."""

    device_name: str
    precision: str
    steps: int
    windows: int
    tokens: int
    train_s: float
    host_ms: float
    device_ms: float | None
    sync_steps: int
    syncs_in_steps: int
    syncs_after_steps: int
    params: int
    peak_tflops: float | None
    peak_source: str

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.train_s

    @property
    def syncs_per_step(self) -> float:
        return self.syncs_in_steps / max(self.sync_steps, 1)

    @property
    def tflops(self) -> float:
        """Achieved TFLOPS over the timed epoch (wall time, all of its steps)."""
        return train_flops(self.params, self.tokens) / self.train_s / 1e12

    @property
    def mfu(self) -> float | None:
        return mfu(self.tflops, self.peak_tflops)

    def to_json(self) -> dict[str, Any]:
        return {"device_name": self.device_name, "precision": self.precision,
                "steps": self.steps, "windows": self.windows, "tokens": self.tokens,
                "train_s": self.train_s, "windows_per_s": self.windows_per_s,
                "host_ms_per_step": self.host_ms, "device_ms_per_step": self.device_ms,
                "sync_steps": self.sync_steps, "syncs_per_step": self.syncs_per_step,
                "syncs_after_steps": self.syncs_after_steps,
                "nonembedding_params": self.params, "tflops": self.tflops,
                "peak_tflops": self.peak_tflops, "peak_source": self.peak_source,
                "mfu": self.mfu}


def timed_epoch(run: Run, epoch: int = 0) -> tuple[StepTimer, float]:
    """One training epoch with a :class:`StepTimer`; ``(timer, wall seconds)``. The wall
    time ends after the epoch's loss is read, so every step's device work is in it."""
    timer = StepTimer(run.device)
    t0 = time.perf_counter()
    train_epoch(run, epoch, step_hook=timer)
    return timer, time.perf_counter() - t0


def counted_steps(run: Run, steps: int, epoch: int = 1) -> SyncMarks:
    """Host syncs over the first ``steps`` steps of ``epoch`` (``marks.counter`` holds all
    of them, ``marks.inside`` those inside steps)."""
    with count_syncs(sync_mode(run.device)) as counter:
        marks = SyncMarks(counter)
        train_epoch(run, epoch, step_hook=marks, max_steps=steps)
    return marks


def measure(run: Run, timer: StepTimer, wall: float, *, sync_steps: int,
            peak_flag: float | None) -> StepFigures:
    """The figures of an epoch timed by :func:`timed_epoch` (``timer``, ``wall``), with the
    syncs counted over ``sync_steps`` steps of the next epoch. ``peak_flag``
    (``--peak-tflops``) replaces the table's peak."""
    device_ms = timer.device_ms()
    marks = counted_steps(run, sync_steps)
    name, precision = device_name(run.device), precision_of(run)
    peak, source = ((peak_flag, "--peak-tflops") if peak_flag is not None
                    else peak_tflops(name, precision))
    return StepFigures(
        device_name=name, precision=precision, steps=timer.steps, windows=timer.windows,
        tokens=timer.tokens, train_s=wall, host_ms=1e3 * timer.host_s / max(timer.steps, 1),
        device_ms=device_ms, sync_steps=marks.steps, syncs_in_steps=marks.inside,
        syncs_after_steps=len(marks.counter) - marks.inside,
        params=non_embedding_params(run.model), peak_tflops=peak, peak_source=source)


def _na(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


TABLE_HEADER = (f"{'agent':9s} {'backbone':10s} {'windows/s':>10s} {'host ms/step':>13s} "
                f"{'device ms/step':>15s} {'syncs/step':>11s} {'TFLOPS':>8s} {'MFU':>7s}")


def table_row(agent: str, backbone: str, f: StepFigures) -> str:
    """One line of the summary table (n/a: no device time on a CPU, no peak known)."""
    return (f"{agent:9s} {backbone:10s} {f.windows_per_s:10.1f} {f.host_ms:13.2f} "
            f"{_na(f.device_ms, '15.2f'):>15s} {f.syncs_per_step:11.2f} {f.tflops:8.4f} "
            f"{_na(f.mfu, '7.2%'):>7s}")
