"""Helpers for the backend tests: the stand-in worker, record readers, an emulated k8s API."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from psy_agents.backends.local import pid_alive  # noqa: F401 - re-exported for tests

STANDIN = Path(__file__).with_name("standin_worker.py")


def standin_argv(record_dir: Path, mode: str) -> tuple[str, ...]:
    """The stand-in worker command (backends append --index I)."""
    return (sys.executable, str(STANDIN), str(record_dir), mode)


def records(record_dir: Path, index: int) -> list[dict]:
    path = record_dir / f"idx-{index}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_until(predicate, timeout: float, what: str, step: float = 0.1):
    """Poll ``predicate`` until truthy; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class KubeEmulator:
    """kmock's Kubernetes emulator served over HTTP from a thread with its own event loop."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.url = ""
        self.emu = None

    async def _main(self) -> None:
        import kmock

        emu = kmock.KubernetesEmulator()
        emu.resources.load_bundled()
        self._stop = asyncio.Event()
        async with emu, kmock.Server(emu) as server:
            self.emu, self.url = emu, str(server.url).rstrip("/")
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> KubeEmulator:
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the kmock server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def kubeconfig(self, path: Path) -> Path:
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "emu",
               "clusters": [{"name": "emu", "cluster": {"server": self.url}}],
               "users": [{"name": "u", "user": {"token": "test-token"}}],
               "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "u"}}]}
        path.write_text(yaml.safe_dump(cfg))
        return path
