"""LoRA Llama 2: parity with HF peft, merged == unmerged, base checkpoint loading."""

import pytest
import torch

from torchtune.models.llama2 import llama2, lora_llama2
from torchtune.models.llama2._convert_weights import tune_to_hf, tune_to_peft_adapter_weights
from torchtune.modules.peft import get_adapter_params, get_merged_lora_ckpt

VOCAB, DIM, LAYERS, HIDDEN, MAX_SEQ_LEN, RANK, ALPHA = 64, 32, 2, 96, 32, 4, 8.0
# Our module names -> HF's, for peft's target_modules.
HF_NAMES = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
CASES = [
    pytest.param(["q_proj", "v_proj"], False, False, 4, id="qv-mha"),
    pytest.param(["q_proj", "k_proj", "v_proj", "output_proj"], True, True, 2, id="all-gqa"),
]


def build(lora_attn_modules, mlp, output, num_kv_heads):
    model = lora_llama2(
        lora_attn_modules, mlp, output, vocab_size=VOCAB, num_layers=LAYERS, num_heads=4,
        num_kv_heads=num_kv_heads, embed_dim=DIM, max_seq_len=MAX_SEQ_LEN,
        intermediate_dim=HIDDEN, lora_rank=RANK, lora_alpha=ALPHA,
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_b too, so the adapters really change the output
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("scale"):
                p.copy_(1.0 + 0.1 * noise)
            else:  # adapters about a tenth of the base weights, as after fine-tuning
                p.copy_((0.07 if "lora_" in name else 0.2) * noise)
    return model.eval()


def split(model):
    adapter = set(get_adapter_params(model))
    sd = model.state_dict()
    return ({k: v for k, v in sd.items() if k not in adapter},
            {k: v for k, v in sd.items() if k in adapter})


def base_model(num_kv_heads):
    return llama2(vocab_size=VOCAB, num_layers=LAYERS, num_heads=4, num_kv_heads=num_kv_heads,
                  embed_dim=DIM, max_seq_len=MAX_SEQ_LEN, intermediate_dim=HIDDEN).eval()


TOKENS = (torch.arange(2 * 17).view(2, 17) * 5 + 1) % VOCAB


@pytest.mark.parametrize("attn_modules,mlp,output,num_kv_heads", CASES)
def test_matches_hf_peft(attn_modules, mlp, output, num_kv_heads):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = build(attn_modules, mlp, output, num_kv_heads)
    base_sd, adapter_sd = split(model)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=DIM, intermediate_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=num_kv_heads,
        max_position_embeddings=MAX_SEQ_LEN, rms_norm_eps=1e-5, tie_word_embeddings=False,
        attn_implementation="eager",
    )
    hf_model = transformers.LlamaForCausalLM(config)
    hf_model.load_state_dict(tune_to_hf(base_sd, 4, num_kv_heads, DIM), strict=True)
    targets = [HF_NAMES[m] for m in attn_modules]
    targets += ["gate_proj", "up_proj", "down_proj"] if mlp else []
    targets += ["lm_head"] if output else []
    lora_config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0,
                                  target_modules=targets, bias="none")
    peft_model = peft.get_peft_model(hf_model, lora_config).eval()
    hf_adapter = tune_to_peft_adapter_weights(adapter_sd, 4, num_kv_heads, DIM)
    result = peft.set_peft_model_state_dict(peft_model, hf_adapter)
    assert not result.unexpected_keys
    n_hf_lora = sum(1 for k in peft_model.state_dict() if "lora_" in k)
    assert n_hf_lora == len(adapter_sd)  # same set of adapted layers on both sides

    with torch.no_grad():
        ours, theirs = model(TOKENS), peft_model(input_ids=TOKENS).logits
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
        base = base_model(num_kv_heads)
        base.load_state_dict(base_sd)
        assert (base(TOKENS) - ours).abs().max() > 1e-2  # the adapters matter


@pytest.mark.parametrize("attn_modules,mlp,output,num_kv_heads", CASES)
def test_merged_checkpoint_equals_unmerged_model(attn_modules, mlp, output, num_kv_heads):
    model = build(attn_modules, mlp, output, num_kv_heads)
    merged_sd = get_merged_lora_ckpt(model.state_dict(), rank=RANK, alpha=ALPHA)
    merged = base_model(num_kv_heads)
    merged.load_state_dict(merged_sd, strict=True)  # a plain base checkpoint, no lora keys
    with torch.no_grad():
        torch.testing.assert_close(merged(TOKENS), model(TOKENS), atol=1e-5, rtol=0)


def test_base_checkpoint_loads_with_exactly_the_adapter_keys_missing():
    model = build(["q_proj", "k_proj"], True, False, 2)
    base = base_model(2)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert unexpected == []
    assert set(missing) == set(get_adapter_params(model)) and len(missing) == 2 * 2 * 5
    # Adapters keep lora_b = 0 after re-initialisation, so the model equals its base.
    for m in model.modules():
        if hasattr(m, "initialize_parameters"):
            m.initialize_parameters()
    with torch.no_grad():
        torch.testing.assert_close(model(TOKENS), base(TOKENS), atol=1e-6, rtol=0)


def test_lora_model_builders_at_published_sizes():
    from torchtune.models.llama2 import lora_llama2_13b, lora_llama2_7b

    with torch.device("meta"):
        m7 = lora_llama2_7b(["q_proj", "v_proj"], lora_rank=8)
        m13 = lora_llama2_13b(["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=8)
    n_adapter_7 = sum(p.numel() for p in get_adapter_params(m7).values())
    assert n_adapter_7 == 32 * 2 * (8 * 4096 + 4096 * 8)  # 4,194,304: the LoRA paper's count
    assert sum(p.numel() for n, p in m7.named_parameters() if "lora_" not in n) == 6_738_415_616
    assert sum(p.numel() for n, p in m13.named_parameters() if "lora_" not in n) == 13_015_864_320


def test_lora_llama2_70b_at_published_size():
    from torchtune.models.llama2 import lora_llama2_70b

    with torch.device("meta"):
        m70 = lora_llama2_70b(["q_proj", "v_proj"], lora_rank=16)
    assert sum(p.numel() for n, p in m70.named_parameters() if "lora_" not in n) == 68_976_648_192
    # q: 8192 -> 8192, v: 8192 -> 1024 (8 kv heads of 128)
    n_adapter = sum(p.numel() for p in get_adapter_params(m70).values())
    assert n_adapter == 80 * (16 * 8192 + 8192 * 16 + 16 * 8192 + 1024 * 16)
