"""The training tests' fixtures (private cache dir, tiny backbone), shared here."""

from tests.training.conftest import _cache_dir, hand_tiny, sample_data  # noqa: F401
