"""Key maps between Mistral's checkpoint layouts and torchtune's internal one.

Mistral keeps Llama's parameter names in all three layouts (Mistral's own
``consolidated.safetensors`` uses Meta's names; transformers' ``MistralForCausalLM`` uses
Llama's HF names, q/k rows permuted for rotate-half RoPE), so these are the shared maps
(``torchtune.models._convert_weights``) with messages naming Mistral.
"""

from typing import Dict, Optional

import torch

from torchtune.models._convert_weights import (  # the same for Mistral
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

_FAMILY = "Mistral"


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Mistral ``consolidated`` state dict -> internal names (a pure rename)."""
    return rename_keys(state_dict, LLAMA_FROM_META, "Meta", _FAMILY, META_IGNORED)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Internal Mistral state dict -> ``consolidated`` names (inverse of ``meta_to_tune``)."""
    return rename_keys(state_dict, invert_map(LLAMA_FROM_META), "internal", _FAMILY)


def hf_to_tune(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 8,
               dim: int = 4096, head_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """transformers' Mistral state dict -> internal layout (renames, q/k rows un-permuted)."""
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)


def tune_to_hf(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 8,
               dim: int = 4096, head_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Internal Mistral state dict -> transformers' names and q/k row order."""
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)
