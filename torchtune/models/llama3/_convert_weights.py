"""Key maps between Llama 3 / 3.1 / 3.2 checkpoint layouts and torchtune's internal one.

Llama 3 keeps Llama 2's parameter names in all three layouts (Meta ``consolidated.*.pth``,
internal, transformers' ``LlamaForCausalLM``) and the same q/k row permutation between
Meta's interleaved and HF's rotate-half RoPE layouts, so these are the shared Llama maps
(``torchtune.models._convert_weights``) with messages naming Llama 3.

Llama 3.2 1B/3B tie the output projection to the token embedding. The internal state dict
of a tied model has ``tok_embeddings.weight`` and no ``output.weight``; the maps here do
not add or drop it: the checkpointers do (``ModelType.LLAMA3_2``), because whether a file
carries the tied copy (Meta's ``consolidated.00.pth`` does, transformers' safetensors do
not) is a property of the file, remembered at load and repeated at save.
"""

from typing import Dict, Optional

import torch

from torchtune.models._convert_weights import (  # the same for Llama 3
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

_FAMILY = "Llama 3"


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Meta-format Llama 3 state dict -> internal names (a pure rename; ``rope.freqs`` dropped).

    Raises:
        ValueError: if a key is not a Llama 3 Meta parameter name.
    """
    return rename_keys(state_dict, LLAMA_FROM_META, "Meta", _FAMILY, META_IGNORED)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Internal Llama 3 state dict -> Meta names (inverse of ``meta_to_tune``).

    Raises:
        ValueError: if a key is not an internal Llama 3 parameter name.
    """
    return rename_keys(state_dict, invert_map(LLAMA_FROM_META), "internal", _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 8,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF (transformers) Llama 3 state dict -> internal layout: renames, and undoes the q/k
    row permutation (``num_heads``/``num_kv_heads``/``hidden_size``/``head_dim`` from
    config.json). ``rotary_emb.inv_freq`` buffers are dropped.

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 8,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Llama 3 state dict -> HF names and q/k row order (inverse of ``hf_to_tune``).

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)
