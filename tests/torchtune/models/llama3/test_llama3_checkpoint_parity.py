"""Logits of a Llama 3.1-style and a 3.2-style model loaded through both checkpointers,
from files laid out as the official repos lay them, equal transformers' on the same weights."""

import json

import pytest
import torch

from torchtune.models.llama3_1 import llama3_1
from torchtune.models.llama3_2 import llama3_2
from torchtune.training.checkpointing import FullModelHFCheckpointer, FullModelMetaCheckpointer

SIZES = dict(vocab_size=96, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
             intermediate_dim=64, max_seq_len=256)
STYLES = {  # name: (builder, model_type, tied, RoPE scale factor)
    "3.1": (llama3_1, "LLAMA3", False, 8.0),
    "3.2": (llama3_2, "LLAMA3_2", True, 32.0),
}


def hf_reference(tied: bool, factor: float):
    """A random transformers model. With head_dim 8 the four RoPE wavelengths are 6, 167,
    4,450 and 118,000 positions: kept, kept, smoothed and scaled against 8,192."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": factor,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # far from init, so a misplaced tensor shows
            p.copy_((1.0 if p.dim() == 1 else 0.0) + 0.2 * torch.randn_like(p))
    return model


def meta_layout(hf_sd, tied: bool):
    """Meta's consolidated names and interleaved q/k rows, undoing transformers' rotate-half
    permutation directly (not through torchtune's key maps)."""
    def unpermute(w, n_heads):
        return w.view(n_heads, 2, w.shape[0] // n_heads // 2, w.shape[1]).transpose(1, 2).reshape(w.shape)

    sd = {"tok_embeddings.weight": hf_sd["model.embed_tokens.weight"], "norm.weight": hf_sd["model.norm.weight"]}
    for i in range(2):
        h, m = f"model.layers.{i}.", f"layers.{i}."
        sd[m + "attention.wq.weight"] = unpermute(hf_sd[h + "self_attn.q_proj.weight"], 4)
        sd[m + "attention.wk.weight"] = unpermute(hf_sd[h + "self_attn.k_proj.weight"], 2)
        sd[m + "attention.wv.weight"] = hf_sd[h + "self_attn.v_proj.weight"]
        sd[m + "attention.wo.weight"] = hf_sd[h + "self_attn.o_proj.weight"]
        sd[m + "feed_forward.w1.weight"] = hf_sd[h + "mlp.gate_proj.weight"]
        sd[m + "feed_forward.w2.weight"] = hf_sd[h + "mlp.down_proj.weight"]
        sd[m + "feed_forward.w3.weight"] = hf_sd[h + "mlp.up_proj.weight"]
        sd[m + "attention_norm.weight"] = hf_sd[h + "input_layernorm.weight"]
        sd[m + "ffn_norm.weight"] = hf_sd[h + "post_attention_layernorm.weight"]
    # Meta's files keep the output projection, a copy of the embedding when tied.
    sd["output.weight"] = sd["tok_embeddings.weight"] if tied else hf_sd["lm_head.weight"]
    return {k: v.clone() for k, v in sd.items()}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_logits_through_both_checkpointers_equal_transformers(tmp_path, style):
    builder, model_type, tied, factor = STYLES[style]
    ref = hf_reference(tied, factor)
    hf_dir, meta_dir = tmp_path / "hf", tmp_path / "original"
    ref.save_pretrained(hf_dir, safe_serialization=True, max_shard_size="40KB")
    index = json.loads((hf_dir / "model.safetensors.index.json").read_text())
    assert ("lm_head.weight" in index["weight_map"]) != tied  # laid out as transformers ships it
    meta_dir.mkdir()
    torch.save(meta_layout(ref.state_dict(), tied), meta_dir / "consolidated.00.pth")
    (meta_dir / "params.json").write_text(json.dumps({
        "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 96,
        "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True}))

    hf = FullModelHFCheckpointer(hf_dir, ["model.safetensors.index.json"],
                                 model_type, tmp_path / "out_hf").load_checkpoint()["model"]
    meta = FullModelMetaCheckpointer(meta_dir, ["consolidated.00.pth"], model_type,
                                     tmp_path / "out_meta").load_checkpoint()["model"]
    assert ("output.weight" in hf) == ("output.weight" in meta) == (not tied)

    tokens = torch.randint(0, 96, (2, 200), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(tokens).logits
        for sd in (hf, meta):
            model = builder(**SIZES, scale_factor=int(factor)).eval()
            model.load_state_dict(sd)
            torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)
        unscaled = builder(**SIZES, scale_factor=1).eval()  # the scaling matters here
        unscaled.load_state_dict(hf)
        assert (unscaled(tokens) - expected).abs().max() > 1e-3
