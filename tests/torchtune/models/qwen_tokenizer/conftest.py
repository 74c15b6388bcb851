from pathlib import Path

import pytest
from qwen_tokenizer_helpers import tiny_tokenizer_json


@pytest.fixture(scope="session")
def tiny_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny_qwen") / "tokenizer.json"
    path.write_text(tiny_tokenizer_json(), encoding="utf-8")
    return path
