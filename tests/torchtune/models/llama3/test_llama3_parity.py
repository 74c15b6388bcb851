"""Llama 3.1 / 3.2 logits and gradients against transformers' ``LlamaForCausalLM``.

The HF model is the reference: it gets random weights, and ours receive them through the
Llama 2 key map (``hf_to_tune``: rename + q/k row permutation), ``lm_head`` dropped for a
tied model. fp32 on CPU, 1e-5 absolute.
"""

import pytest
import torch
import torch.nn.functional as F

from torchtune.models.llama2._convert_weights import hf_to_tune
from torchtune.models.llama3_1 import llama3_1
from torchtune.models.llama3_2 import llama3_2, lora_llama3_2
from torchtune.modules.loss import LinearCrossEntropyLoss
from torchtune.modules.peft import get_adapter_params, set_trainable_params

transformers = pytest.importorskip("transformers")

ATOL = 1e-5
VOCAB, DIM, HEADS, KV_HEADS, LAYERS, HIDDEN = 64, 64, 4, 2, 2, 96  # head_dim 16
OLD_CONTEXT_LEN = 8192  # the builders' (Meta's) value
# Positions far apart, so relative distances reach 32 * 900 > OLD_CONTEXT_LEN: the rotations
# of the scaled (long-wavelength) frequencies differ visibly from unscaled RoPE.
LONG_POS = torch.arange(33) * 900 + 7
LONG_MAX_SEQ_LEN = 32 * 1024
STYLES = {  # builder, scale factor, tied
    "3.1": (llama3_1, 8, False),
    "3.2": (llama3_2, 32, True),
}


def hf_model(scale_factor: int, tied: bool):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=DIM, intermediate_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=LONG_MAX_SEQ_LEN, rms_norm_eps=1e-5, tie_word_embeddings=tied,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500_000.0, "factor": scale_factor,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": OLD_CONTEXT_LEN},
        attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # norm scales around 1, weights with std 0.2: logits are not tiny
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.2 * noise)
    if tied:
        assert model.lm_head.weight is model.model.embed_tokens.weight
    return model.eval()


def ours_from_hf(hf, builder, max_seq_len: int, strict: bool = True, **kwargs):
    model = builder(vocab_size=VOCAB, num_layers=LAYERS, num_heads=HEADS,
                    num_kv_heads=KV_HEADS, embed_dim=DIM, max_seq_len=max_seq_len,
                    intermediate_dim=HIDDEN, **kwargs)
    sd = dict(hf.state_dict())
    if "output.weight" not in model.state_dict():
        sd.pop("lm_head.weight")  # tied: the same tensor as embed_tokens, one key in ours
    sd = hf_to_tune(sd, HEADS, KV_HEADS, DIM)
    missing, unexpected = model.load_state_dict(sd, strict=strict)
    assert not unexpected and all(".lora_" in k for k in missing)
    return model.eval()


def tokens_for(seq_len: int, batch: int = 2) -> torch.Tensor:
    return (torch.arange(batch * seq_len).view(batch, seq_len) * 7 + 3) % VOCAB


@pytest.mark.parametrize("style", list(STYLES))
def test_logits_match_hf_including_the_scaled_frequencies(style):
    builder, scale_factor, tied = STYLES[style]
    hf = hf_model(scale_factor, tied)
    model = ours_from_hf(hf, builder, LONG_MAX_SEQ_LEN)
    assert ("output.weight" in model.state_dict()) == (not tied)

    # Every branch of the scaling rule is hit by this head_dim's frequencies.
    rope = model.layers[0].attn.pos_embeddings
    theta = 1.0 / (500_000 ** (torch.arange(0, DIM // HEADS, 2).float() / (DIM // HEADS)))
    wavelen = 2 * torch.pi / theta
    assert (wavelen < OLD_CONTEXT_LEN / 4).any()  # kept
    assert (wavelen > OLD_CONTEXT_LEN).any()  # divided by scale_factor
    assert ((wavelen >= OLD_CONTEXT_LEN / 4) & (wavelen <= OLD_CONTEXT_LEN)).any()  # smoothed
    assert rope.scaling.scale_factor == scale_factor

    unscaled = ours_from_hf(hf, builder, LONG_MAX_SEQ_LEN)
    for layer in unscaled.layers:
        layer.attn.pos_embeddings.scaling = None
    unscaled.layers[0].attn.pos_embeddings.reset_parameters()  # one shared module

    for positions in (None, LONG_POS):
        seq_len = 33
        tokens = tokens_for(seq_len)
        input_pos = None if positions is None else positions.expand(2, seq_len)
        with torch.no_grad():
            ours = model(tokens, input_pos=input_pos)
            theirs = hf(input_ids=tokens, position_ids=input_pos).logits
            plain = unscaled(tokens, input_pos=input_pos)
        assert ours.shape == (2, seq_len, VOCAB)
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
        assert ours.std() > 0.5
    # At long distances the scaling changes the logits: HF's agreement is not vacuous.
    assert (ours - plain).abs().max() > 1e-2


def test_kv_cache_decoding_equals_full_forward_for_the_tied_scaled_model(assert_decoding_equals_full_forward):
    hf = hf_model(32, True)
    model = ours_from_hf(hf, llama3_2, 64)
    assert_decoding_equals_full_forward(model, tokens_for(24), prefill=10)


def test_tied_embedding_gradient_is_the_sum_of_both_uses():
    hf = hf_model(32, True)
    model = ours_from_hf(hf, llama3_2, 64).train()
    tokens = tokens_for(20)
    targets = tokens.roll(-1, dims=1)

    def loss_of(logits):
        return F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))

    loss_of(model(tokens)).backward()
    loss_of(hf.train()(input_ids=tokens).logits).backward()
    grad = model.tok_embeddings.weight.grad
    torch.testing.assert_close(grad, hf.model.embed_tokens.weight.grad, atol=1e-6, rtol=1e-5)

    # The same weights untied, one copy per use: their two gradients add up to the tied one.
    untied = ours_from_hf(hf, llama3_2, 64, tie_word_embeddings=False).train()
    assert untied.output.weight is not untied.tok_embeddings.weight
    loss_of(untied(tokens)).backward()
    lookup, projection = untied.tok_embeddings.weight.grad, untied.output.weight.grad
    torch.testing.assert_close(grad, lookup + projection, atol=1e-6, rtol=1e-5)
    assert lookup.abs().max() > 1e-3 and projection.abs().max() > 1e-3  # both uses count


def test_lora_tied_model_fused_loss_equals_logits_and_cross_entropy():
    hf = hf_model(32, True)
    kwargs = dict(lora_attn_modules=["q_proj", "v_proj"], apply_lora_to_mlp=True,
                  lora_rank=4, lora_alpha=8.0)
    model = ours_from_hf(hf, lambda **kw: lora_llama3_2(**kwargs, **kw), 64, strict=False).train()
    with torch.no_grad():  # non-zero lora_b, so the adapters change the output
        for name, p in get_adapter_params(model).items():
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    set_trainable_params(model, get_adapter_params(model))
    tokens = tokens_for(20)
    labels = tokens.clone()
    labels[0, :5] = -100

    logits = model(tokens)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1),
                          ignore_index=-100, reduction="sum")
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert len(ref_grads) == LAYERS * 2 * 5 and all(g.abs().max() > 0 for g in ref_grads.values())
    model.zero_grad(set_to_none=True)

    loss_fn = LinearCrossEntropyLoss(num_output_chunks=2, min_chunk_size=4)
    loss_fn.set_model_output(model)
    loss, count = loss_fn(model(tokens), labels)
    loss.backward()
    assert count.item() == (labels[:, 1:] != -100).sum().item()
    torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-6)
    assert model.tok_embeddings.weight.grad is None  # frozen, although the fused path used it
    for n, g in ref_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[n].grad, g, atol=1e-5,
                                   rtol=1e-4, msg=n)
