"""Model builders: Code Llama at the published sizes (Rozière et al. 2023), torchtune
0.6.1's names. Code Llama is Llama 2's architecture with a 16-token-larger vocabulary
(infilling tokens), 16K context and RoPE base 1e6; its checkpoints load with
``model_type: LLAMA2`` and it uses ``llama2_tokenizer``."""

from typing import List

from torchtune.models._qlora import qlora_builder
from torchtune.models.llama2._component_builders import llama2, lora_llama2
from torchtune.modules import TransformerDecoder

# vocab, layers, heads, kv heads, dim, hidden (Meta's params.json for each size).
_SIZES = {
    "7b": dict(num_layers=32, num_heads=32, num_kv_heads=32, embed_dim=4096, intermediate_dim=11008),
    "13b": dict(num_layers=40, num_heads=40, num_kv_heads=40, embed_dim=5120, intermediate_dim=13824),
    "70b": dict(num_layers=80, num_heads=64, num_kv_heads=8, embed_dim=8192, intermediate_dim=28672),
}
_COMMON = dict(vocab_size=32_016, max_seq_len=16384, attn_dropout=0.0, norm_eps=1e-5, rope_base=1_000_000)


def code_llama2_7b() -> TransformerDecoder:
    """Code Llama 7B: 32 layers, 32 heads, d=4096, hidden 11008."""
    return llama2(**_SIZES["7b"], **_COMMON)


def code_llama2_13b() -> TransformerDecoder:
    """Code Llama 13B: 40 layers, 40 heads, d=5120, hidden 13824."""
    return llama2(**_SIZES["13b"], **_COMMON)


def code_llama2_70b() -> TransformerDecoder:
    """Code Llama 70B: 80 layers, 64 heads (8 kv), d=8192, hidden 28672."""
    return llama2(**_SIZES["70b"], **_COMMON)


def _lora(size: str, lora_attn_modules: List[str], apply_lora_to_mlp: bool, apply_lora_to_output: bool,
          lora_rank: int, lora_alpha: float, lora_dropout: float, use_dora: bool,
          quantize_base: bool) -> TransformerDecoder:
    return lora_llama2(
        lora_attn_modules=lora_attn_modules, apply_lora_to_mlp=apply_lora_to_mlp,
        apply_lora_to_output=apply_lora_to_output, **_SIZES[size], **_COMMON,
        lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        use_dora=use_dora, quantize_base=quantize_base,
    )


def lora_code_llama2_7b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Code Llama 7B with LoRA adapters; arguments as in ``lora_llama2``."""
    return _lora("7b", lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output,
                 lora_rank, lora_alpha, lora_dropout, use_dora, quantize_base)


def lora_code_llama2_13b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Code Llama 13B with LoRA adapters; arguments as in ``lora_llama2``."""
    return _lora("13b", lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output,
                 lora_rank, lora_alpha, lora_dropout, use_dora, quantize_base)


def lora_code_llama2_70b(
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.05,
    use_dora: bool = False,
    quantize_base: bool = False,
) -> TransformerDecoder:
    """Code Llama 70B with LoRA adapters; arguments as in ``lora_llama2``."""
    return _lora("70b", lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output,
                 lora_rank, lora_alpha, lora_dropout, use_dora, quantize_base)


qlora_code_llama2_7b = qlora_builder(lora_code_llama2_7b)
qlora_code_llama2_13b = qlora_builder(lora_code_llama2_13b)
qlora_code_llama2_70b = qlora_builder(lora_code_llama2_70b)
