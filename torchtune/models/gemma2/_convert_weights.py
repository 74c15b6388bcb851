"""Key maps between transformers' Gemma 2 layout and torchtune's internal one.

Gemma 2 has four norms per layer. transformers' ``post_attention_layernorm`` is the norm
*after* attention here (``sa_scale``, torchtune 0.6.1's name), not the one before the MLP
as in Llama; that one is ``pre_feedforward_layernorm`` (``mlp_norm``), and
``post_feedforward_layernorm`` is ``mlp_scale``. Everything else is Llama's names and q/k
permutation; the output is tied (no ``lm_head.weight``).

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

_FAMILY = "Gemma 2"

GEMMA2_FROM_HF = dict(
    LLAMA_FROM_HF,
    **{
        "model.layers.{}.post_attention_layernorm.weight": "layers.{}.sa_scale.scale",
        "model.layers.{}.pre_feedforward_layernorm.weight": "layers.{}.mlp_norm.scale",
        "model.layers.{}.post_feedforward_layernorm.weight": "layers.{}.mlp_scale.scale",
    },
)


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: there is no Meta-format Gemma 2 checkpoint.

    Raises:
        UserValueError: always.
    """
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Gemma 2 name; returns ``state_dict`` unchanged.

    Raises:
        ValueError: on a key that is not an internal Gemma 2 parameter name.
    """
    return check_internal_keys(state_dict, GEMMA2_FROM_HF, _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 8,
    num_kv_heads: int = 1,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF (transformers) Gemma 2 state dict -> internal layout: every key renamed, each
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
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, GEMMA2_FROM_HF, _FAMILY)


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 8,
    num_kv_heads: int = 1,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Gemma 2 state dict -> HF names and q/k order (exact inverse of ``hf_to_tune``).

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the heads.
    """
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, GEMMA2_FROM_HF, _FAMILY)
