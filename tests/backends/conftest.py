"""Fixtures for the backend tests (helpers live in tests/backends/helpers.py)."""

from __future__ import annotations

import pytest

from tests.backends.helpers import KubeEmulator


@pytest.fixture
def kube(tmp_path):
    """(emulator, kubeconfig path) for one test."""
    with KubeEmulator() as emulator:
        yield emulator, emulator.kubeconfig(tmp_path / "kubeconfig")
