"""Key maps between transformers' Qwen 3 layout and torchtune's internal one.

Qwen 2's maps (``torchtune.models.qwen2._convert_weights``: Llama's names, q/k/v biases
when ``attention_bias`` is set, the within-head q/k permutation between HF's rotate-half
and our interleaved RoPE) plus the per-head RMSNorms on queries and keys:
``self_attn.q_norm.weight`` <-> ``layers.{i}.attn.q_norm.scale`` (and ``k_norm``), shape
``[head_dim]``. A norm scale multiplies each head's entries before RoPE, so it is permuted
like one head's rows. ``head_dim`` comes from config.json: in Qwen 3 it need not be
``hidden_size // num_attention_heads``.

Tied models (``tie_word_embeddings: true``: Qwen 3 up to 4B) have no ``lm_head.weight`` in
their files and no ``output.weight`` internally (decided by the HF checkpointer from
config.json). No Meta layout: ``meta_to_tune`` refuses, ``tune_to_meta`` is a key check.
"""

from typing import Dict, Optional

import torch

from torchtune.models._convert_weights import (  # same HF module names as Llama
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

_FAMILY = "Qwen 3"

QWEN3_FROM_HF = dict(
    LLAMA_FROM_HF,
    **{
        "model.layers.{}.self_attn.q_norm.weight": "layers.{}.attn.q_norm.scale",
        "model.layers.{}.self_attn.k_norm.weight": "layers.{}.attn.k_norm.scale",
    },
)


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: there is no Meta-format Qwen 3 checkpoint.

    Raises:
        UserValueError: always.
    """
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Qwen 3 name; returns ``state_dict`` unchanged.

    Raises:
        ValueError: on a key that is not an internal Qwen 3 parameter name.
    """
    return check_internal_keys(state_dict, QWEN3_FROM_HF, _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 8,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF (transformers) Qwen 3 state dict -> internal layout.

    Renames every key; reorders each head's q/k weight rows (and biases, if any) and the
    q_norm/k_norm scales from rotate-half to interleaved RoPE order.

    Args:
        state_dict (Dict[str, torch.Tensor]): HF-format state dict.
        num_heads (int): ``num_attention_heads``.
        num_kv_heads (int): ``num_key_value_heads``.
        dim (int): ``hidden_size``.
        head_dim (Optional[int]): config.json ``head_dim``; defaults to ``dim // num_heads``.

    Returns:
        Dict[str, torch.Tensor]: internal-layout state dict.

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, QWEN3_FROM_HF, _FAMILY)


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 8,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Qwen 3 state dict -> HF names and q/k order (exact inverse of ``hf_to_tune``).

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, QWEN3_FROM_HF, _FAMILY)
