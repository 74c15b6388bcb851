"""Per-sequence log-probabilities of preference batches: the padding-free and padded
batches agree, and both equal a direct computation from transformers' logits on the same
weights (the bundled stories260K model). The LoRA reference (adapters off) is exactly the
base model."""

from pathlib import Path

import pytest
import torch

from torchtune.data import padded_collate_dpo, padding_free_collate_dpo
from torchtune.datasets import preference_dataset
from torchtune.models.llama2 import llama2, llama2_tokenizer, lora_llama2
from torchtune.models.llama2._convert_weights import meta_to_tune, tune_to_hf
from torchtune.rlhf import disable_adapters, get_batch_log_probs

REPO = Path(__file__).resolve().parents[3]
STORIES = REPO / "torchtune" / "assets" / "stories260K"
PAIRS = REPO / "torchtune" / "assets" / "dpo_en_demo_subset.json"
SIZES = dict(vocab_size=512, num_layers=5, num_heads=8, num_kv_heads=4, embed_dim=64,
             max_seq_len=512, intermediate_dim=172, norm_eps=1e-5)


@pytest.fixture(scope="module")
def state_dict():
    return meta_to_tune(torch.load(STORIES / "consolidated.00.pth", weights_only=True))


@pytest.fixture(scope="module")
def pairs():
    tok = llama2_tokenizer(str(STORIES / "tokenizer.model"))
    ds = preference_dataset(tok, "json", data_files=str(PAIRS), max_seq_len=128)
    return [ds[i] for i in range(3)]


def _model(state_dict):
    model = llama2(**SIZES)
    model.load_state_dict(state_dict)
    return model.eval()


def test_padding_free_equals_padded(state_dict, pairs):
    model = _model(state_dict)
    free = padding_free_collate_dpo(pairs)
    padded = padded_collate_dpo(pairs)
    with torch.no_grad():
        a = get_batch_log_probs(model(free["tokens"], input_pos=free["input_pos"], seq_lens=free["seq_lens"]),
                                free["labels"], free["seq_lens"])
        b = get_batch_log_probs(model(padded["tokens"]), padded["labels"])
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-4)
    assert a[0].shape == (6,) and (a[1] > 0).all()


def test_equal_direct_computation_from_transformers_logits(state_dict, pairs):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=5, num_attention_heads=8,
        num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=False, attn_implementation="eager",
    )
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.load_state_dict(tune_to_hf(state_dict, num_heads=8, num_kv_heads=4, dim=64), strict=False)
    free = padding_free_collate_dpo(pairs)
    with torch.no_grad():
        ours, counts, _ = get_batch_log_probs(
            _model(state_dict)(free["tokens"], input_pos=free["input_pos"], seq_lens=free["seq_lens"]),
            free["labels"], free["seq_lens"],
        )
        expected, expected_counts = [], []
        for key in ("chosen", "rejected"):
            for pair in pairs:
                tokens = torch.tensor(pair[f"{key}_input_ids"])
                labels = torch.tensor(pair[f"{key}_labels"])
                logits = hf(tokens[None]).logits[0, :-1].double()
                mask = labels[1:] != -100
                token_logps = torch.log_softmax(logits, -1).gather(-1, labels[1:].clamp(min=0)[:, None])[:, 0]
                expected.append(token_logps[mask].sum())
                expected_counts.append(int(mask.sum()))
    torch.testing.assert_close(ours.double(), torch.stack(expected), rtol=1e-5, atol=1e-4)
    assert counts.tolist() == expected_counts


def test_disable_adapters_is_exactly_the_base_model(state_dict, pairs):
    torch.manual_seed(0)
    lora = lora_llama2(lora_attn_modules=["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=4,
                       lora_alpha=8, **SIZES)
    lora.load_state_dict(state_dict, strict=False)
    for name, p in lora.named_parameters():
        if "lora_b" in name:
            torch.nn.init.normal_(p, std=0.05)  # a trained-looking adapter
    lora.eval()
    free = padding_free_collate_dpo(pairs)
    kwargs = dict(input_pos=free["input_pos"], seq_lens=free["seq_lens"])
    with torch.no_grad():
        base = _model(state_dict)(free["tokens"], **kwargs)
        adapted = lora(free["tokens"], **kwargs)
    with disable_adapters(lora):
        reference = lora(free["tokens"], **kwargs)
        assert not reference.requires_grad
    assert torch.equal(reference, base)
    assert not torch.allclose(adapted, base)
    with torch.no_grad():
        assert torch.equal(lora(free["tokens"], **kwargs), adapted)  # scaling restored
    with pytest.raises(RuntimeError):
        with disable_adapters(lora):
            raise RuntimeError("boom")
    assert all(m.scaling == 2.0 for m in lora.modules() if hasattr(m, "lora_a"))
