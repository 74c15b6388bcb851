"""Component builders for Llama 3.1 (Meta, July 2024).

Llama 3.1 is Llama 3 (``torchtune.models.llama3``) with Llama 3 RoPE frequency scaling
(``modules.Llama3RopeScaling``: ``scale_factor`` 8, low/high frequency factors 1 and 4,
pre-training context 8192) for its 128K context. The state-dict layout is Llama 2's.
"""

from typing import List, Optional

from torchtune.models._decoder import llama_decoder, lora_module_names
from torchtune.models.llama3._model_utils import scale_hidden_dim_for_mlp
from torchtune.modules import Llama3RopeScaling, TransformerDecoder


def llama3_1(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    attn_dropout: float = 0.0,
    rope_base: int = 500_000,
    intermediate_dim: Optional[int] = None,
    norm_eps: float = 1e-5,
    scale_factor: int = 8,
) -> TransformerDecoder:
    """Build a Llama 3.1 decoder with the given sizes.

    Args:
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        attn_dropout, rope_base, intermediate_dim, norm_eps: as in
        ``torchtune.models.llama3.llama3``.
        scale_factor (int): RoPE scaling factor of the low frequencies.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.

    Raises:
        ValueError: if the head counts don't divide as required.
    """
    return llama_decoder(
        vocab_size=vocab_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        embed_dim=embed_dim,
        max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim or scale_hidden_dim_for_mlp(embed_dim),
        attn_dropout=attn_dropout,
        norm_eps=norm_eps,
        rope_base=rope_base,
        rope_scaling=Llama3RopeScaling(scale_factor=scale_factor),
    )


def lora_llama3_1(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    *,
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    max_seq_len: int,
    intermediate_dim: Optional[int] = None,
    attn_dropout: float = 0.0,
    norm_eps: float = 1e-5,
    rope_base: int = 500_000,
    scale_factor: int = 8,
    lora_rank: int,
    lora_alpha: float,
    lora_dropout: float = 0.0,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Build Llama 3.1 with LoRA adapters on the chosen linear layers.

    Args:
        lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output, lora_rank, lora_alpha,
        lora_dropout, use_dora, quantize_base: as in ``torchtune.models.llama2.lora_llama2``.
        vocab_size, num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len,
        intermediate_dim, attn_dropout, norm_eps, rope_base, scale_factor: as in
        ``llama3_1``.

    Returns:
        TransformerDecoder: the LoRA model.

    Raises:
        ValueError: on an unknown module name in ``lora_attn_modules`` or bad head counts.
    """
    return llama_decoder(
        vocab_size=vocab_size,
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        embed_dim=embed_dim,
        max_seq_len=max_seq_len,
        hidden_dim=intermediate_dim or scale_hidden_dim_for_mlp(embed_dim),
        attn_dropout=attn_dropout,
        norm_eps=norm_eps,
        rope_base=rope_base,
        rope_scaling=Llama3RopeScaling(scale_factor=scale_factor),
        lora_modules=lora_module_names(
            lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output
        ),
        lora_rank=lora_rank,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        use_dora=use_dora,
        quantize_base=quantize_base,
    )
