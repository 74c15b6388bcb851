import lzma
from pathlib import Path

import pytest

ASSETS = Path(__file__).parents[3] / "assets"


@pytest.fixture(scope="session")
def llama3_model(tmp_path_factory) -> Path:
    """Meta's Llama 3 tokenizer.model, stored xz-compressed (tests/assets keeps each file
    under 1 MB; see tests/assets/README.md)."""
    path = tmp_path_factory.mktemp("llama3") / "tokenizer.model"
    path.write_bytes(lzma.decompress((ASSETS / "llama3_tokenizer.model.xz").read_bytes()))
    return path
