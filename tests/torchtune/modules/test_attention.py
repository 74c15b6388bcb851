"""MultiHeadAttention: GQA equals MHA with repeated kv heads; a causal reference; errors."""

import math

import pytest
import torch
from torch import nn

from torchtune.modules import MultiHeadAttention, RotaryPositionalEmbeddings

D, H, H_D = 16, 4, 4


def build(num_kv_heads: int) -> MultiHeadAttention:
    return MultiHeadAttention(
        embed_dim=D, num_heads=H, num_kv_heads=num_kv_heads, head_dim=H_D,
        q_proj=nn.Linear(D, H * H_D, bias=False),
        k_proj=nn.Linear(D, num_kv_heads * H_D, bias=False),
        v_proj=nn.Linear(D, num_kv_heads * H_D, bias=False),
        output_proj=nn.Linear(H * H_D, D, bias=False),
        pos_embeddings=RotaryPositionalEmbeddings(H_D, 32),
        max_seq_len=32,
    )


def fill_(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(torch.sin(torch.arange(p.numel()).view(p.shape) * (0.37 + i)) * 0.5)
    return module


def test_gqa_equals_mha_with_each_kv_head_repeated():
    gqa = fill_(build(num_kv_heads=2))
    mha = build(num_kv_heads=4)
    with torch.no_grad():
        mha.q_proj.weight.copy_(gqa.q_proj.weight)
        mha.output_proj.weight.copy_(gqa.output_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(2, H_D, D)  # [n_kv, h_d, d]
            getattr(mha, name).weight.copy_(w.repeat_interleave(2, dim=0).reshape(H * H_D, D))
    x = torch.cos(torch.arange(2 * 7 * D).view(2, 7, D) * 0.1)
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-6, rtol=0)


def test_matches_explicit_softmax_attention():
    attn = fill_(build(num_kv_heads=4))
    x = torch.cos(torch.arange(1 * 5 * D).view(1, 5, D) * 0.3)
    q = attn.pos_embeddings(attn.q_proj(x).view(1, 5, H, H_D)).transpose(1, 2)
    k = attn.pos_embeddings(attn.k_proj(x).view(1, 5, H, H_D)).transpose(1, 2)
    v = attn.v_proj(x).view(1, 5, H, H_D).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(H_D)
    scores = scores.masked_fill(torch.triu(torch.ones(5, 5, dtype=torch.bool), 1), float("-inf"))
    expected = attn.output_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(1, 5, D))
    torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=0)


def test_kv_heads_must_divide_heads():
    with pytest.raises(ValueError, match=r"num_kv_heads \(3\) must divide num_heads \(4\)"):
        build(num_kv_heads=3)


def test_cache_without_mask_is_rejected():
    attn = build(num_kv_heads=2)
    attn.setup_cache(batch_size=1, dtype=torch.float32)
    with pytest.raises(ValueError, match="needs an explicit mask"):
        attn(torch.zeros(1, 3, D))
