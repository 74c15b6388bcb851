"""Shared test set-up: keep runs reproducible and off the network."""

import os
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"

# Dataset loading in tests is local; never wait on the Hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def assets() -> Path:
    """Folder of the small fixtures described in tests/assets/README.md."""
    return ASSETS
