"""Qwen 2 / Qwen 3 logits against transformers' ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM``.

The HF model is the reference: it gets random weights far from its init (biases and q/k
norm scales included), and ours receive them renamed, with HF's rotate-half q/k rows, q/k
bias entries and q/k norm scales permuted within each head by the same permutation the
key maps use (``torchtune.models._convert_weights.permute_qk_rows``). fp32 on CPU, 1e-5
absolute.
Also: KV-cache decoding equals a full forward, and ``seq_lens`` document attention equals
running each document alone.
"""

import re

import pytest
import torch

from torchtune.models._convert_weights import permute_qk_rows
from torchtune.models.qwen2 import lora_qwen2, qwen2
from torchtune.models.qwen3 import lora_qwen3, qwen3

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
VOCAB, DIM, HEADS, KV_HEADS, LAYERS, HIDDEN = 64, 64, 4, 2, 2, 96
QWEN3_HEAD_DIM = 24  # != DIM // HEADS = 16
MAX_SEQ_LEN = 64
ROPE_BASE = 1_000_000
EPS = 1e-6

_RENAMES = [
    (r"^model\.embed_tokens\.weight$", "tok_embeddings.weight"),
    (r"^model\.norm\.weight$", "norm.scale"),
    (r"^lm_head\.weight$", "output.weight"),
    (r"^model\.layers\.(\d+)\.input_layernorm\.weight$", r"layers.\1.sa_norm.scale"),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"layers.\1.mlp_norm.scale"),
    (r"^model\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$",
     r"layers.\1.attn.\2_proj.\3"),
    (r"^model\.layers\.(\d+)\.self_attn\.o_proj\.weight$", r"layers.\1.attn.output_proj.weight"),
    (r"^model\.layers\.(\d+)\.self_attn\.([qk])_norm\.weight$", r"layers.\1.attn.\2_norm.scale"),
    (r"^model\.layers\.(\d+)\.mlp\.gate_proj\.weight$", r"layers.\1.mlp.w1.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.down_proj\.weight$", r"layers.\1.mlp.w2.weight"),
    (r"^model\.layers\.(\d+)\.mlp\.up_proj\.weight$", r"layers.\1.mlp.w3.weight"),
]


def hf_to_ours(sd, num_heads, num_kv_heads, head_dim):
    """Rename, and permute q/k rows, biases and norm scales within each head."""
    out = {}
    for key, value in sd.items():
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        else:
            raise KeyError(key)
        heads = None
        if ".attn.q_proj." in new:
            heads = num_heads
        elif ".attn.k_proj." in new:
            heads = num_kv_heads
        elif ".attn.q_norm." in new or ".attn.k_norm." in new:
            heads = 1  # one scale vector shared by every head
        if heads is not None:
            two_d = value.dim() == 2
            value = permute_qk_rows(value if two_d else value[:, None], heads, head_dim,
                                    to_hf=False, name=new)
            value = value if two_d else value[:, 0]
        out[new] = value.clone()
    return out


def hf_model(family: str, tied: bool):
    common = dict(
        vocab_size=VOCAB, hidden_size=DIM, intermediate_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=MAX_SEQ_LEN, rms_norm_eps=EPS, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": float(ROPE_BASE)},
        attn_implementation="eager",
    )
    if family == "qwen2":
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common))
    else:
        config = transformers.Qwen3Config(head_dim=QWEN3_HEAD_DIM, attention_bias=False, **common)
        model = transformers.Qwen3ForCausalLM(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # norm scales around 1, weights and biases with std 0.2
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.2 * noise)
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    return model.eval()


def ours(family: str, tied: bool, lora: bool = False):
    kwargs = dict(vocab_size=VOCAB, num_layers=LAYERS, num_heads=HEADS, num_kv_heads=KV_HEADS,
                  embed_dim=DIM, intermediate_dim=HIDDEN, max_seq_len=MAX_SEQ_LEN,
                  norm_eps=EPS, rope_base=ROPE_BASE, tie_word_embeddings=tied)
    if family == "qwen3":
        kwargs["head_dim"] = QWEN3_HEAD_DIM
    if lora:
        builder = lora_qwen2 if family == "qwen2" else lora_qwen3
        return builder(["q_proj", "k_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True,
                       lora_rank=4, lora_alpha=8.0, **kwargs)
    return (qwen2 if family == "qwen2" else qwen3)(**kwargs)


def ours_from_hf(hf, family: str, tied: bool, lora: bool = False):
    model = ours(family, tied, lora)
    sd = dict(hf.state_dict())
    if tied:
        sd.pop("lm_head.weight")  # the same tensor as embed_tokens; one key in ours
    head_dim = QWEN3_HEAD_DIM if family == "qwen3" else DIM // HEADS
    missing, unexpected = model.load_state_dict(
        hf_to_ours(sd, HEADS, KV_HEADS, head_dim), strict=not lora
    )
    assert not unexpected and all(".lora_" in k for k in missing)
    return model.eval()


def tokens_for(seq_len: int, batch: int = 2) -> torch.Tensor:
    return (torch.arange(batch * seq_len).view(batch, seq_len) * 7 + 3) % VOCAB


CASES = [("qwen2", False), ("qwen2", True), ("qwen3", False), ("qwen3", True)]


@pytest.mark.parametrize("family,tied", CASES)
def test_logits_match_transformers(family, tied):
    hf = hf_model(family, tied)
    model = ours_from_hf(hf, family, tied)
    sd = model.state_dict()
    assert ("output.weight" in sd) == (not tied)
    assert ("layers.0.attn.q_proj.bias" in sd) == (family == "qwen2")
    assert ("layers.0.attn.q_norm.scale" in sd) == (family == "qwen3")
    tokens = tokens_for(33)
    offset = torch.arange(33).expand(2, 33) + 17  # positions not starting at 0
    for input_pos in (None, offset):
        with torch.no_grad():
            got = model(tokens, input_pos=input_pos)
            want = hf(input_ids=tokens, position_ids=input_pos).logits
        assert got.shape == (2, 33, VOCAB)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        assert got.std() > 0.5


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_lora_model_with_fresh_adapters_matches_transformers(family):
    hf = hf_model(family, tied=False)
    model = ours_from_hf(hf, family, tied=False, lora=True)
    tokens = tokens_for(20)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf(input_ids=tokens).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("family,tied", [("qwen2", True), ("qwen3", False)])
def test_kv_cache_decoding_equals_full_forward(family, tied, assert_decoding_equals_full_forward):
    model = ours_from_hf(hf_model(family, tied), family, tied)
    assert_decoding_equals_full_forward(model, tokens_for(24), prefill=10)


def test_document_attention_equals_per_document_runs_for_qwen3():
    model = ours_from_hf(hf_model("qwen3", True), "qwen3", True)
    seq_lens = torch.tensor([[5, 11, 4], [20, 0, 0]])
    tokens = tokens_for(20)
    input_pos = torch.cat(
        [torch.cat([torch.arange(n) for n in row if n]) for row in seq_lens.tolist()]
    ).view(2, 20)
    with torch.no_grad():
        packed = model(tokens, seq_lens=seq_lens, input_pos=input_pos)
        for b, row in enumerate(seq_lens.tolist()):
            start = 0
            for n in row:
                if not n:
                    continue
                alone = model(tokens[b : b + 1, start : start + n])
                torch.testing.assert_close(packed[b : b + 1, start : start + n], alone,
                                           atol=ATOL, rtol=0)
                start += n
    # Training mode (autograd through q/k norm and the per-document path) gives the same.
    model.train()
    out = model(tokens, seq_lens=seq_lens, input_pos=input_pos)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), packed, atol=ATOL, rtol=0)
    assert model.layers[0].attn.q_norm.scale.grad.abs().sum() > 0
