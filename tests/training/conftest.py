"""Fixtures: one torch thread, the tiny backbone built once, the prepared sample.

In-process training here names no cache folder, so the tiny model built from the sample
goes to a private temporary folder and features stay in memory (nothing under ./runs).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    # One thread: on the shared 2-core box, two OpenMP threads wait on each other whenever
    # another job holds a core (an epoch measured 41 s with 2 threads vs 20 s with 1).
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def hand_tiny(tmp_path_factory) -> str:
    """A tiny BERT whose vocabulary is trained on the hand-made texts (seconds)."""
    from psy_agents.agents.backbones import build_tiny_backbone
    from tests.training.helpers import corpus_texts

    return str(build_tiny_backbone(corpus_texts(), tmp_path_factory.mktemp("m") / "tiny",
                                   vocab_size=400))


@pytest.fixture(scope="session")
def sample_data(sample_dir):
    from psy_agents.data.prepare import prepare_data

    return prepare_data(sample_dir)
