"""Key maps between transformers' Gemma layout and torchtune's internal one.

Gemma keeps Llama's HF parameter names (``input_layernorm`` is ``sa_norm``,
``post_attention_layernorm`` ``mlp_norm``) and its q/k row order (rotate-half, permuted to our
interleaved RoPE within each head), so these are the shared maps with messages naming
Gemma. The output is tied: the files hold no ``lm_head.weight``. The RMSNorm weights are
stored as Gemma stores them (``w`` of ``x * (1 + w)``): no conversion.

No Meta layout: ``meta_to_tune`` refuses, ``tune_to_meta`` is a key check.
"""

from typing import Dict, Optional

import torch

from torchtune.models._convert_weights import (
    check_internal_keys,
    hf_to_tune_keys,
    LLAMA_FROM_HF,
    refuse_meta,
    tune_to_hf_keys,
    tune_to_peft_adapter_config,
    tune_to_peft_adapter_weights,
)

__all__ = [
    "meta_to_tune",
    "tune_to_meta",
    "hf_to_tune",
    "tune_to_hf",
    "tune_to_peft_adapter_weights",
    "tune_to_peft_adapter_config",
]

_FAMILY = "Gemma"


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: there is no Meta-format Gemma checkpoint.

    Raises:
        UserValueError: always.
    """
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Gemma name; returns ``state_dict`` unchanged.

    Raises:
        ValueError: on a key that is not an internal Gemma parameter name.
    """
    return check_internal_keys(state_dict, LLAMA_FROM_HF, _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 8,
    num_kv_heads: int = 1,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF (transformers) Gemma state dict -> internal layout: every key renamed, each
    head's q/k rows (and q/k norm scales) reordered from rotate-half to interleaved RoPE.

    Args:
        state_dict (Dict[str, torch.Tensor]): HF-format state dict.
        num_heads (int): ``num_attention_heads``.
        num_kv_heads (int): ``num_key_value_heads``.
        dim (int): ``hidden_size``.
        head_dim (Optional[int]): config.json ``head_dim`` (256 in Gemma, not dim / heads).

    Returns:
        Dict[str, torch.Tensor]: internal-layout state dict.

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the heads.
    """
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 8,
    num_kv_heads: int = 1,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Gemma state dict -> HF names and q/k order (exact inverse of ``hf_to_tune``).

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the heads.
    """
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)
