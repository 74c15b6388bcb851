"""The bundled stories260K model (torchtune/assets/stories260K), loaded once per test session."""

import json
from pathlib import Path

import pytest
import torch

from torchtune.models.llama2 import llama2
from torchtune.models.llama2._convert_weights import meta_to_tune

STORIES_DIR = Path(__file__).resolve().parents[3] / "torchtune" / "assets" / "stories260K"


def load_stories260k() -> torch.nn.Module:
    params = json.loads((STORIES_DIR / "params.json").read_text())
    model = llama2(
        vocab_size=params["vocab_size"],
        num_layers=params["n_layers"],
        num_heads=params["n_heads"],
        num_kv_heads=params["n_kv_heads"],
        embed_dim=params["dim"],
        max_seq_len=params["max_seq_len"],
        intermediate_dim=params["hidden_dim"],
        norm_eps=params["norm_eps"],
    )
    state_dict = torch.load(STORIES_DIR / "consolidated.00.pth", weights_only=True)
    model.load_state_dict(meta_to_tune(state_dict))
    return model.eval()


@pytest.fixture(scope="session")
def stories260k() -> torch.nn.Module:
    return load_stories260k()
