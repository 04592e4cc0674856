"""Count host synchronizations: ``with count_syncs() as syncs: ...; len(syncs)``.

A host sync is a point where Python waits for the device: reading a value (``.item()``,
``float(t)``, ``if t:``), copying to the host (``.cpu()``, ``.numpy()``, ``.tolist()``), or
an op whose output size depends on the data (``nonzero``, ``masked_select``, indexing with a
boolean mask). On a GPU each one drains the launch queue, so a training step must have none.

Two ways of counting:

- ``"python"`` (any device, the CPU tests' choice): the Tensor methods and torch functions
  above are wrapped for the duration of the block and every call made from code outside
  torch's own package (ours, transformers') is recorded with its call site. torch's own
  internals are not counted (on a CPU they read CPU tensors, e.g. the optimizer's step
  counter, which is no device sync on a GPU either).
- ``"cuda"``: ``torch.cuda.set_sync_debug_mode("warn")`` makes torch warn on every
  synchronizing CUDA call, wherever it is made (torch internals included); each warning
  is one event.

Not thread-safe: the wrappers are process-wide while a block runs.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from psy_agents.lazy import lazy_import

torch = lazy_import("torch")

# Tensor methods that read a value or copy to the host whatever their arguments are.
_TENSOR_METHODS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__",
                   "__index__", "__array__", "nonzero", "masked_select", "unique")
# torch functions whose output size depends on the data (one sync each on a GPU).
_TORCH_FUNCTIONS = ("nonzero", "masked_select", "unique", "argwhere")


@dataclass(frozen=True)
class SyncEvent:
    """One synchronizing call: what it was and where (``file:line`` of the caller)."""

    kind: str
    where: str


@dataclass
class SyncCounter:
    """The events recorded inside a :func:`count_syncs` block."""

    mode: str
    events: list[SyncEvent] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)

    def by_site(self) -> dict[str, int]:
        """``"kind at file:line"`` -> count, for error messages."""
        out: dict[str, int] = {}
        for e in self.events:
            key = f"{e.kind} at {e.where}"
            out[key] = out.get(key, 0) + 1
        return out


def _torch_dir() -> str:
    return str(Path(torch.__file__).resolve().parent)


def _caller(depth: int) -> tuple[str, str]:
    """``(filename, "file:line")`` of the frame ``depth`` levels above the wrapper."""
    frame = sys._getframe(depth + 1)
    name = frame.f_code.co_filename
    return name, f"{Path(name).name}:{frame.f_lineno}"


def _is_bool_index(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _wrap(counter: SyncCounter, kind: str, original: Callable[..., Any], skip: str,
          when: Callable[..., bool] | None = None) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        filename, where = _caller(1)
        if not filename.startswith(skip) and (when is None or when(*args, **kwargs)):
            counter.events.append(SyncEvent(kind, where))
        return original(*args, **kwargs)

    wrapper.__name__ = getattr(original, "__name__", kind)
    return wrapper


@contextmanager
def _python_hooks(counter: SyncCounter) -> Iterator[None]:
    skip = _torch_dir()
    saved: list[tuple[Any, str, Any, bool]] = []
    targets = [(torch.Tensor, name, None) for name in _TENSOR_METHODS]
    # the real module: the lazy stand-in above is a copy of its namespace
    module = importlib.import_module("torch")
    targets += [(module, name, None) for name in _TORCH_FUNCTIONS]
    targets.append((torch.Tensor, "__getitem__", lambda _t, index: _is_bool_index(index)))
    try:
        for owner, name, when in targets:
            original = getattr(owner, name)
            saved.append((owner, name, original, name in vars(owner)))
            label = f"torch.{name}" if owner is module else name
            setattr(owner, name, _wrap(counter, label, original, skip, when))
        yield
    finally:
        for owner, name, original, own in reversed(saved):
            if own:
                setattr(owner, name, original)
            else:  # inherited (from the C base): drop the shadowing wrapper
                delattr(owner, name)


@contextmanager
def _cuda_hooks(counter: SyncCounter) -> Iterator[None]:
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    counter.events += [SyncEvent("cuda sync", f"{Path(w.filename).name}:{w.lineno}")
                       for w in caught if "synchroniz" in str(w.message).lower()]


def sync_mode(device: str) -> Literal["python", "cuda"]:
    """The counting mode that sees every sync on ``device`` (``"cuda"`` on a GPU)."""
    return "cuda" if str(device).startswith("cuda") else "python"


@contextmanager
def count_syncs(mode: Literal["python", "cuda"] = "python") -> Iterator[SyncCounter]:
    """Record the host synchronizations made inside the block (see the module docstring).

    Raises:
        ValueError: ``mode`` is neither ``"python"`` nor ``"cuda"``.
    """
    if mode not in ("python", "cuda"):
        raise ValueError(f"The value of `mode` is {mode!r}, but must be 'python' or 'cuda'")
    counter = SyncCounter(mode)
    hooks = _python_hooks if mode == "python" else _cuda_hooks
    with hooks(counter):
        yield counter
