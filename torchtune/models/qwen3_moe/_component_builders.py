"""Component builders for Qwen 3 MoE (Alibaba, 2025): Qwen 3's decoder with a
mixture-of-experts MLP.

Every layer is Qwen 3's (per-head q/k RMSNorm, head_dim 128, RoPE base 1e6) but its MLP is
a ``torchtune.modules.moe.MoE``: a router over ``num_experts`` SwiGLU experts of width
``moe_intermediate_dim``, ``experts_per_token`` of them per token, their weights
renormalised when ``norm_topk_prob``. transformers' ``decoder_sparse_step`` and
``mlp_only_layers`` keep some layers dense (width ``intermediate_dim``); the published
models have none.
"""

import dataclasses
from typing import List, Optional

from torchtune.models._builders import decoder_builder, lora_builder
from torchtune.models._decoder import llama_description
from torchtune.models._description import DecoderDescription, MLPDescription


def moe_layers(num_layers: int, decoder_sparse_step: int, mlp_only_layers: List[int]) -> List[bool]:
    """transformers' rule: layer i is a mixture unless listed in ``mlp_only_layers``, when
    ``(i + 1)`` is a multiple of ``decoder_sparse_step``."""
    return [i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0 for i in range(num_layers)]


@decoder_builder
def qwen3_moe(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    moe_intermediate_dim: int,
    num_experts: int,
    experts_per_token: int,
    max_seq_len: int,
    head_dim: Optional[int] = None,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-6,
    rope_base: float = 1_000_000,
    tie_word_embeddings: bool = False,
    norm_topk_prob: bool = True,
    decoder_sparse_step: int = 1,
    mlp_only_layers: Optional[List[int]] = None,
    router_aux_loss_coef: float = 0.001,
) -> DecoderDescription:
    """Build a Qwen 3 MoE decoder.

    Args:
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len, head_dim,
        attn_dropout, norm_eps, rope_base, tie_word_embeddings: as in
            ``torchtune.models.qwen3.qwen3``.
        intermediate_dim (int): SwiGLU width of the dense layers (``mlp_only_layers``).
        moe_intermediate_dim (int): SwiGLU width of each expert.
        num_experts (int): experts per MoE layer.
        experts_per_token (int): experts each token is routed to (top-k).
        norm_topk_prob (bool): renormalise the k routing weights to sum to one.
        decoder_sparse_step (int): every this-many-th layer is a mixture.
        mlp_only_layers (Optional[List[int]]): layers kept dense.
        router_aux_loss_coef (float): weight of the load-balancing loss in training.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.
    """
    dense = llama_description(
        vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
        num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim, attn_dropout=attn_dropout, norm_eps=norm_eps,
        rope_base=rope_base, tie_word_embeddings=tie_word_embeddings, head_dim=head_dim,
        qk_norm=True,
    )
    moe = MLPDescription(
        hidden_dim=moe_intermediate_dim, num_experts=num_experts,
        experts_per_token=experts_per_token, norm_topk_prob=norm_topk_prob,
    )
    layers = tuple(
        dataclasses.replace(layer, mlp=moe) if sparse else layer
        for layer, sparse in zip(dense.layers, moe_layers(num_layers, decoder_sparse_step, mlp_only_layers or []))
    )
    return dataclasses.replace(dense, layers=layers, router_aux_loss_coef=router_aux_loss_coef)


lora_qwen3_moe = lora_builder(
    qwen3_moe,
    router=True,
    notes=(
        "Adapters go on attention, each mixture layer's router (``apply_lora_to_router``, "
        "default True) and, with ``apply_lora_to_mlp``, every expert (stacked adapters: "
        "``torchtune.modules.moe.GroupedExperts``). Under ``quantize_base`` the experts are "
        "NF4 and the router stays full precision. DoRA is refused on the router and experts."
    ),
)
