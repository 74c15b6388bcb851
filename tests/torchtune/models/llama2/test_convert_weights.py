"""Tests for the Llama 2 key maps: bit-exact round trips, RoPE equivalence, HF parity."""

import pytest
import torch

from torchtune.models.llama2._convert_weights import (
    hf_to_tune,
    meta_to_tune,
    tune_to_hf,
    tune_to_meta,
    tune_to_peft_adapter_config,
    tune_to_peft_adapter_weights,
)

# A tiny GQA model: 4 query heads, 2 kv heads, head_dim 8.
DIM, N_H, N_KV, H_D, HIDDEN, VOCAB, LAYERS = 32, 4, 2, 8, 48, 64, 2


def _tune_sd(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"tok_embeddings.weight": (VOCAB, DIM), "norm.scale": (DIM,), "output.weight": (VOCAB, DIM)}
    for i in range(LAYERS):
        shapes.update(
            {
                f"layers.{i}.sa_norm.scale": (DIM,),
                f"layers.{i}.attn.q_proj.weight": (N_H * H_D, DIM),
                f"layers.{i}.attn.k_proj.weight": (N_KV * H_D, DIM),
                f"layers.{i}.attn.v_proj.weight": (N_KV * H_D, DIM),
                f"layers.{i}.attn.output_proj.weight": (DIM, N_H * H_D),
                f"layers.{i}.mlp_norm.scale": (DIM,),
                f"layers.{i}.mlp.w1.weight": (HIDDEN, DIM),
                f"layers.{i}.mlp.w2.weight": (DIM, HIDDEN),
                f"layers.{i}.mlp.w3.weight": (HIDDEN, DIM),
            }
        )
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_meta_round_trip_is_bit_exact_and_drops_rope_freqs():
    tune = _tune_sd()
    meta = tune_to_meta(tune)
    assert "layers.1.attention.wq.weight" in meta and "norm.weight" in meta
    assert "layers.0.feed_forward.w2.weight" in meta and "layers.0.ffn_norm.weight" in meta
    meta_with_freqs = dict(meta, **{"rope.freqs": torch.ones(H_D // 2)})
    back = meta_to_tune(meta_with_freqs)
    _assert_identical(back, tune)
    _assert_identical(tune_to_meta(back), meta)


def test_hf_round_trip_is_bit_exact_with_gqa():
    tune = _tune_sd()
    hf = tune_to_hf(tune, num_heads=N_H, num_kv_heads=N_KV, dim=DIM)
    assert "model.layers.0.mlp.gate_proj.weight" in hf and "lm_head.weight" in hf
    # q/k are permuted (not merely renamed), v is not.
    q = "layers.0.attn.q_proj.weight"
    assert not torch.equal(hf["model.layers.0.self_attn.q_proj.weight"], tune[q])
    assert torch.equal(hf["model.layers.0.self_attn.v_proj.weight"], tune["layers.0.attn.v_proj.weight"])
    hf["model.rotary_emb.inv_freq"] = torch.ones(H_D // 2)
    back = hf_to_tune(hf, num_heads=N_H, num_kv_heads=N_KV, dim=DIM)
    _assert_identical(back, tune)
    hf.pop("model.rotary_emb.inv_freq")
    _assert_identical(tune_to_hf(back, num_heads=N_H, num_kv_heads=N_KV, dim=DIM), hf)


def test_permutation_matches_transformers_reference_formula():
    # The formula from transformers' convert_llama_weights_to_hf.py, written out independently.
    w = torch.randn(N_KV * H_D, DIM)
    ref = w.view(N_KV, H_D // 2, 2, DIM).transpose(1, 2).reshape(N_KV * H_D, DIM)
    hf = tune_to_hf({"layers.0.attn.k_proj.weight": w}, num_heads=N_H, num_kv_heads=N_KV, dim=DIM)
    assert torch.equal(hf["model.layers.0.self_attn.k_proj.weight"], ref)


def _rope_interleaved(x, pos):
    # meta-llama/llama: rotate pairs (x_{2j}, x_{2j+1}) by pos * theta_j via complex numbers.
    freqs = 1.0 / (10000 ** (torch.arange(0, H_D, 2).float() / H_D))
    rot = torch.polar(torch.ones(len(pos), H_D // 2), torch.outer(pos.float(), freqs))
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], H_D // 2, 2))
    return torch.view_as_real(xc * rot).flatten(-2)


def _rope_rotate_half(x, pos):
    # transformers' LlamaRotaryEmbedding + apply_rotary_pos_emb: pairs (x_j, x_{j + h_d/2}).
    freqs = 1.0 / (10000 ** (torch.arange(0, H_D, 2).float() / H_D))
    ang = torch.outer(pos.float(), freqs)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    x1, x2 = x[..., : H_D // 2], x[..., H_D // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def test_attention_scores_agree_between_layouts():
    g = torch.Generator().manual_seed(1)
    tune = {
        "layers.0.attn.q_proj.weight": torch.randn(N_H * H_D, DIM, generator=g),
        "layers.0.attn.k_proj.weight": torch.randn(N_KV * H_D, DIM, generator=g),
    }
    hf = tune_to_hf(tune, num_heads=N_H, num_kv_heads=N_KV, dim=DIM)
    x = torch.randn(5, DIM, generator=g)
    pos = torch.arange(5)

    def scores(wq, wk, rope):
        q = rope((x @ wq.T).view(5, N_H, H_D).transpose(0, 1), pos)  # [n_h, s, h_d]
        k = rope((x @ wk.T).view(5, N_KV, H_D).transpose(0, 1), pos)  # [n_kv, s, h_d]
        k = k.repeat_interleave(N_H // N_KV, dim=0)
        return q @ k.transpose(1, 2)

    meta_scores = scores(*tune.values(), _rope_interleaved)
    hf_scores = scores(
        hf["model.layers.0.self_attn.q_proj.weight"],
        hf["model.layers.0.self_attn.k_proj.weight"],
        _rope_rotate_half,
    )
    torch.testing.assert_close(hf_scores, meta_scores, atol=1e-5, rtol=1e-5)


def test_unknown_keys_raise_naming_the_key():
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.self_attn\.qkv_proj\.weight'"):
        hf_to_tune({"model.layers.0.self_attn.qkv_proj.weight": torch.zeros(3 * DIM, DIM)}, N_H, N_KV, DIM)
    with pytest.raises(ValueError, match=r"'transformer\.wte\.weight'.*Meta"):
        meta_to_tune({"transformer.wte.weight": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match=r"'layers\.0\.attention\.wq\.weight'.*internal"):
        tune_to_hf({"layers.0.attention.wq.weight": torch.zeros(DIM, DIM)}, N_H, N_KV, DIM)


def test_qk_shape_that_does_not_fit_heads_is_a_clear_error():
    bad = {"model.layers.0.self_attn.k_proj.weight": torch.zeros(3 * H_D, DIM)}
    with pytest.raises(ValueError, match=r"k_proj.*\(24, 32\).*2 heads"):
        hf_to_tune(bad, num_heads=N_H, num_kv_heads=N_KV, dim=DIM)


def test_peft_adapter_map_permutes_q_lora_b_like_the_base_weight():
    g = torch.Generator().manual_seed(2)
    r = 4
    a = torch.randn(r, DIM, generator=g)
    b = torch.randn(N_H * H_D, r, generator=g)
    adapter = {
        "layers.0.attn.q_proj.lora_a.weight": a,
        "layers.0.attn.q_proj.lora_b.weight": b,
        "layers.1.mlp.w2.lora_a.weight": torch.randn(r, HIDDEN, generator=g),
        "output.lora_b.weight": torch.randn(VOCAB, r, generator=g),
    }
    peft = tune_to_peft_adapter_weights(adapter, num_heads=N_H, num_kv_heads=N_KV, dim=DIM)
    assert set(peft) == {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
        "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
        "base_model.model.lm_head.lora_B.weight",
    }
    delta_tune = b @ a
    delta_hf = (
        peft["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
        @ peft["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    )
    expected = tune_to_hf({"layers.0.attn.q_proj.weight": delta_tune}, N_H, N_KV, DIM)
    torch.testing.assert_close(delta_hf, expected["model.layers.0.self_attn.q_proj.weight"])
    with pytest.raises(ValueError, match=r"'layers\.0\.attn\.q_proj\.weight'"):
        tune_to_peft_adapter_weights({"layers.0.attn.q_proj.weight": a}, N_H, N_KV, DIM)


def test_peft_adapter_config():
    cfg = tune_to_peft_adapter_config(
        {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "output_proj", "w1"]}
    )
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM"
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16
    assert cfg["target_modules"] == ["q_proj", "o_proj", "gate_proj"]
    with pytest.raises(ValueError, match="'lora_alpha'"):
        tune_to_peft_adapter_config({"r": 8, "target_modules": ["q_proj"]})
    with pytest.raises(ValueError, match="'qkv'"):
        tune_to_peft_adapter_config({"r": 8, "lora_alpha": 1, "target_modules": ["qkv"]})


def test_logits_match_transformers_llama():
    llama2_mod = pytest.importorskip("torchtune.models.llama2")
    if not hasattr(llama2_mod, "llama2"):
        pytest.skip("torchtune.models.llama2.llama2 not available yet")
    transformers = pytest.importorskip("transformers")

    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=N_H,
        num_key_value_heads=N_KV,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    hf_model = transformers.LlamaForCausalLM(hf_cfg).eval()
    ours = llama2_mod.llama2(
        vocab_size=VOCAB,
        num_layers=LAYERS,
        num_heads=N_H,
        num_kv_heads=N_KV,
        embed_dim=DIM,
        intermediate_dim=HIDDEN,
        max_seq_len=64,
        norm_eps=1e-5,
    ).eval()
    sd = hf_to_tune(hf_model.state_dict(), num_heads=N_H, num_kv_heads=N_KV, dim=DIM)
    ours.load_state_dict(sd, strict=True)
    tokens = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf_model(tokens).logits
        actual = ours(tokens)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_peft_adapter_map_names_and_permutes_the_dora_magnitude():
    """peft saves DoRA's magnitude as ``...lora_magnitude_vector`` [out]; on k_proj its rows
    follow the base weight's rotary permutation, so each HF row keeps its own magnitude."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(N_KV * H_D, DIM, generator=g)
    adapter = {
        "layers.0.attn.k_proj.magnitude": torch.linalg.norm(weight, dim=1),
        "layers.0.mlp.w1.magnitude": torch.arange(HIDDEN, dtype=torch.float32),
        "output.magnitude": torch.ones(VOCAB),
    }
    peft = tune_to_peft_adapter_weights(adapter, num_heads=N_H, num_kv_heads=N_KV, dim=DIM)
    assert set(peft) == {
        "base_model.model.model.layers.0.self_attn.k_proj.lora_magnitude_vector",
        "base_model.model.model.layers.0.mlp.gate_proj.lora_magnitude_vector",
        "base_model.model.lm_head.lora_magnitude_vector",
    }
    w_hf = tune_to_hf({"layers.0.attn.k_proj.weight": weight}, N_H, N_KV, DIM)["model.layers.0.self_attn.k_proj.weight"]
    torch.testing.assert_close(
        peft["base_model.model.model.layers.0.self_attn.k_proj.lora_magnitude_vector"], torch.linalg.norm(w_hf, dim=1)
    )
    assert torch.equal(peft["base_model.model.model.layers.0.mlp.gate_proj.lora_magnitude_vector"],
                       adapter["layers.0.mlp.w1.magnitude"])
    cfg = tune_to_peft_adapter_config({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": True})
    assert cfg["use_dora"] is True
