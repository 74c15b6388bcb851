"""Key maps between transformers' Gemma 3 layout and torchtune's internal one.

Gemma 2's names (four norms per layer: ``post_attention_layernorm`` is ``sa_scale``,
``pre_feedforward_layernorm`` ``mlp_norm``, ``post_feedforward_layernorm`` ``mlp_scale``)
plus the per-head q/k norms ``self_attn.{q,k}_norm.weight`` <-> ``attn.{q,k}_norm.scale``
(``[head_dim]``, permuted within the head like one head's q/k rows). The output is tied.

These maps read the text decoder's names (``model.layers...``). In the 4B-27B multimodal
checkpoints the text decoder sits under ``language_model.model.`` (the Hub files) or
``model.language_model.`` (transformers 5's saves), beside the vision tower and projector:
the HF checkpointer takes that prefix off before these maps and carries the other tensors
through unchanged (``FullModelHFCheckpointer``).

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

_FAMILY = "Gemma 3"

GEMMA3_FROM_HF = dict(
    LLAMA_FROM_HF,
    **{
        "model.layers.{}.post_attention_layernorm.weight": "layers.{}.sa_scale.scale",
        "model.layers.{}.pre_feedforward_layernorm.weight": "layers.{}.mlp_norm.scale",
        "model.layers.{}.post_feedforward_layernorm.weight": "layers.{}.mlp_scale.scale",
        "model.layers.{}.self_attn.q_norm.weight": "layers.{}.attn.q_norm.scale",
        "model.layers.{}.self_attn.k_norm.weight": "layers.{}.attn.k_norm.scale",
    },
)


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: there is no Meta-format Gemma 3 checkpoint.

    Raises:
        UserValueError: always.
    """
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Gemma 3 name; returns ``state_dict`` unchanged.

    Raises:
        ValueError: on a key that is not an internal Gemma 3 parameter name.
    """
    return check_internal_keys(state_dict, GEMMA3_FROM_HF, _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 8,
    num_kv_heads: int = 1,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF (transformers) Gemma 3 state dict -> internal layout: every key renamed, each
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
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, GEMMA3_FROM_HF, _FAMILY)


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 8,
    num_kv_heads: int = 1,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Gemma 3 state dict -> HF names and q/k order (exact inverse of ``hf_to_tune``).

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the heads.
    """
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, GEMMA3_FROM_HF, _FAMILY)
