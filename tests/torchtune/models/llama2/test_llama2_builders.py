"""Llama 2 builders: published parameter counts (on the meta device), layout, errors."""

import re
from pathlib import Path

import pytest
import torch

from torchtune.models.llama2 import (
    llama2,
    llama2_13b,
    llama2_70b,
    llama2_7b,
    llama2_tokenizer,
    scale_hidden_dim_for_mlp,
)

ASSETS = Path(__file__).parents[3] / "assets"


def count_from_published_shapes(vocab, dim, layers, heads, kv_heads, hidden):
    """Parameter count from the shapes of Meta's params.json (untied output layer)."""
    head_dim = dim // heads
    attn = dim * heads * head_dim * 2 + dim * kv_heads * head_dim * 2  # wq, wo, wk, wv
    mlp = 3 * dim * hidden
    norms = 2 * dim
    return 2 * vocab * dim + layers * (attn + mlp + norms) + dim


@pytest.mark.parametrize(
    "builder,published,shapes",
    [
        (llama2_7b, 6_738_415_616, (32_000, 4096, 32, 32, 32, 11008)),
        (llama2_13b, 13_015_864_320, (32_000, 5120, 40, 40, 40, 13824)),
        (llama2_70b, 68_976_648_192, (32_000, 8192, 80, 64, 8, 28672)),
    ],
    ids=["7b", "13b", "70b"],
)
def test_published_parameter_counts_on_meta_device(builder, published, shapes):
    assert count_from_published_shapes(*shapes) == published
    with torch.device("meta"):
        model = builder()
    assert all(p.is_meta for p in model.parameters())  # nothing allocated
    assert sum(p.numel() for p in model.parameters()) == published
    hidden = shapes[-1]
    assert model.layers[0].mlp.w1.weight.shape == (hidden, shapes[1])


def test_meta_hidden_dim_rule():
    assert scale_hidden_dim_for_mlp(4096) == 11008
    assert scale_hidden_dim_for_mlp(5120) == 13824
    assert scale_hidden_dim_for_mlp(64) == 256  # 170 rounded up to a multiple of 256
    model = llama2(vocab_size=8, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=64,
                   max_seq_len=8)
    assert model.layers[0].mlp.w2.weight.shape == (64, 256)


def test_state_dict_layout_matches_design():
    model = llama2(vocab_size=10, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=16,
                   max_seq_len=8, intermediate_dim=24)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {"tok_embeddings.weight": (10, 16), "norm.scale": (16,), "output.weight": (10, 16)}
    for i in range(2):
        expected.update({
            f"layers.{i}.sa_norm.scale": (16,),
            f"layers.{i}.attn.q_proj.weight": (16, 16),
            f"layers.{i}.attn.k_proj.weight": (8, 16),
            f"layers.{i}.attn.v_proj.weight": (8, 16),
            f"layers.{i}.attn.output_proj.weight": (16, 16),
            f"layers.{i}.mlp_norm.scale": (16,),
            f"layers.{i}.mlp.w1.weight": (24, 16),
            f"layers.{i}.mlp.w2.weight": (16, 24),
            f"layers.{i}.mlp.w3.weight": (24, 16),
        })
    assert shapes == expected  # no RoPE or cache buffers leak into the state dict


def test_parameters_follow_default_dtype():
    with torch.device("meta"):
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = llama2(vocab_size=8, num_layers=1, num_heads=2, num_kv_heads=2,
                           embed_dim=8, max_seq_len=4)
        finally:
            torch.set_default_dtype(torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(
    "heads,kv_heads,dim,message",
    [
        (3, 3, 32, "num_heads (3) must divide embed_dim (32)"),
        (4, 3, 32, "num_kv_heads (3) must divide num_heads (4)"),
        (4, 0, 32, "num_kv_heads (0) must divide num_heads (4)"),
    ],
)
def test_bad_head_counts_fail_at_build_time(heads, kv_heads, dim, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        llama2(vocab_size=8, num_layers=1, num_heads=heads, num_kv_heads=kv_heads,
               embed_dim=dim, max_seq_len=4)


def test_too_long_sequence_is_rejected():
    model = llama2(vocab_size=8, num_layers=1, num_heads=2, num_kv_heads=2, embed_dim=8,
                   max_seq_len=4)
    with pytest.raises(ValueError, match="Sequence length 5 exceeds the model's max_seq_len 4"):
        model(torch.zeros(1, 5, dtype=torch.long))


def test_tokenizer_builder_returns_sentencepiece_tokenizer():
    from torchtune.tokenizers import SentencePieceTokenizer

    path = ASSETS / "llama2_tokenizer.model"
    if not path.exists():
        pytest.skip(f"{path} not present")
    tokenizer = llama2_tokenizer(str(path))
    assert isinstance(tokenizer._base, SentencePieceTokenizer)  # held, not inherited
    assert tokenizer.vocab_size == 32_000
