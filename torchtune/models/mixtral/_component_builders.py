"""Component builders for Mixtral (Mistral AI, 2023): Mistral's decoder with a
mixture-of-experts MLP in every layer.

Every layer is Mistral's (GQA, RoPE, RMSNorm, an optional sliding window) with its MLP a
``torchtune.modules.moe.MoE``: a router over ``num_experts`` SwiGLU experts of width
``intermediate_dim``, ``experts_per_token`` per token, their weights always renormalised
to sum to one (transformers' ``MixtralTopKRouter``).
"""

import dataclasses
from typing import Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription, MLPDescription


@decoder_builder
def mixtral(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    num_experts: int,
    experts_per_token: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-5,
    rope_base: float = 1_000_000,
    sliding_window: Optional[int] = None,
    router_aux_loss_coef: float = 0.02,
) -> DecoderDescription:
    """Build a Mixtral decoder.

    Args:
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        attn_dropout, norm_eps, rope_base, sliding_window: as in
            ``torchtune.models.mistral.mistral``.
        intermediate_dim (int): SwiGLU width of each expert.
        num_experts (int): experts per layer.
        experts_per_token (int): experts each token is routed to (top-k).
        router_aux_loss_coef (float): weight of the load-balancing loss in training.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.
    """
    dense = llama_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, sliding_window=sliding_window,
    )
    moe = MLPDescription(
        hidden_dim=intermediate_dim, num_experts=num_experts,
        experts_per_token=experts_per_token, norm_topk_prob=True,
    )
    layers = tuple(dataclasses.replace(layer, mlp=moe) for layer in dense.layers)
    return dataclasses.replace(dense, layers=layers, router_aux_loss_coef=router_aux_loss_coef)


lora_mixtral = lora_builder(
    mixtral,
    router=True,
    notes=(
        "Adapters go on attention, each mixture layer's router (``apply_lora_to_router``, "
        "default True) and, with ``apply_lora_to_mlp``, every expert (stacked adapters: "
        "``torchtune.modules.moe.GroupedExperts``). Under ``quantize_base`` the experts are "
        "NF4 and the router stays full precision. DoRA is refused on the router and experts."
    ),
)
