"""The training tests' fixtures (one torch thread, tiny backbone), shared here."""

from tests.training.conftest import _one_thread, hand_tiny, sample_data  # noqa: F401
