"""Key maps between Llama 2's external checkpoint layouts and torchtune's internal one.

Llama 2 is the Llama-style decoder as it was first named: the Meta and HF name tables and
the q/k row permutation between Meta's interleaved and HF's rotate-half RoPE layouts live
in ``torchtune.models._convert_weights`` (shared with Llama 3 and Qwen); this module is
Llama 2's four maps over them, with messages naming Llama 2, plus the peft adapter maps
its 0.6.1 API exported.
"""

from typing import Dict, Optional

import torch

from torchtune.models._convert_weights import (
    hf_to_tune_keys,
    invert_map,
    LLAMA_FROM_HF,
    LLAMA_FROM_META,
    META_IGNORED,
    rename_keys,
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

_FAMILY = "Llama 2"


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert a Meta-format Llama 2 state dict to the internal layout (a pure rename).

    Args:
        state_dict (Dict[str, torch.Tensor]): Meta-format state dict; ``rope.freqs`` is dropped.

    Returns:
        Dict[str, torch.Tensor]: the same tensors under internal names.

    Raises:
        ValueError: if a key is not a Llama 2 Meta parameter name.
    """
    return rename_keys(state_dict, LLAMA_FROM_META, "Meta", _FAMILY, META_IGNORED)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert an internal Llama 2 state dict to Meta's names (inverse of ``meta_to_tune``).

    Raises:
        ValueError: if a key is not an internal Llama 2 parameter name.
    """
    return rename_keys(state_dict, invert_map(LLAMA_FROM_META), "internal", _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 32,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Convert an HF (transformers) Llama 2 state dict to the internal layout.

    Renames every key and undoes the q/k row permutation that
    ``convert_llama_weights_to_hf.py`` applied. ``rotary_emb.inv_freq`` buffers are dropped.

    Args:
        state_dict (Dict[str, torch.Tensor]): HF-format state dict.
        num_heads (int): number of query heads (``num_attention_heads``).
        num_kv_heads (int): number of key/value heads (``num_key_value_heads``).
        dim (int): embedding dimension (``hidden_size``).
        head_dim (Optional[int]): per-head dimension; defaults to ``dim // num_heads``.

    Returns:
        Dict[str, torch.Tensor]: internal-layout state dict.

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 32,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Convert an internal Llama 2 state dict to HF (transformers) names and q/k row order.

    Exact inverse of ``hf_to_tune``; arguments as there.

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)
