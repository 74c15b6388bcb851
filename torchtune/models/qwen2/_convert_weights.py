"""Key maps between transformers' Qwen 2 / 2.5 layout and torchtune's internal one.

Qwen has no Meta-format checkpoint: the external layout is transformers'
``Qwen2ForCausalLM`` (``model.layers.{i}.self_attn.q_proj.weight`` ...). Names are Llama's
(``torchtune.models._convert_weights``) plus the q/k/v projection biases
(``self_attn.{q,k,v}_proj.bias`` <-> ``layers.{i}.attn.{q,k,v}_proj.bias``).

Our RoPE rotates interleaved pairs ``(x_{2j}, x_{2j+1})`` (Meta's layout) while transformers'
Qwen rotates halves ``(x_j, x_{j + h_d/2})``, so ``hf_to_tune`` reorders each head's q/k
output rows exactly as Llama's ``hf_to_tune`` does, and applies the same reordering to the
q/k bias entries (a bias is indexed by output row); ``tune_to_hf`` undoes it. The permuted
dimension is the output dimension, so the peft adapter map permutes ``lora_b`` of q/k the
same way (the shared ``tune_to_peft_adapter_weights``, re-exported here).

Tied models (config.json ``tie_word_embeddings: true``: Qwen 2.5 up to 3B) have no
``lm_head.weight`` in their files and no ``output.weight`` internally; the HF checkpointer
decides from config.json (``ModelType.QWEN2`` ties per checkpoint), these maps do not add
or drop it.

``meta_to_tune`` refuses (there is no Meta layout); ``tune_to_meta`` only checks that every
key is an internal Qwen name and returns the dict unchanged (the TorchTune checkpointer
uses it as a key check).
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

_FAMILY = "Qwen 2"

# HF -> internal: Llama's names plus the attention biases.
QWEN2_FROM_HF = LLAMA_FROM_HF  # its q/k/v bias names are among Llama's optional biases


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: there is no Meta-format Qwen 2 checkpoint.

    Raises:
        UserValueError: always.
    """
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Qwen 2 name; returns ``state_dict`` unchanged
    (there is no Meta layout to rename to).

    Raises:
        ValueError: on a key that is not an internal Qwen 2 parameter name.
    """
    return check_internal_keys(state_dict, QWEN2_FROM_HF, _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 28,
    num_kv_heads: int = 4,
    dim: int = 3584,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF (transformers) Qwen 2 / 2.5 state dict -> internal layout.

    Renames every key and reorders each head's q/k weight rows and q/k bias entries from
    rotate-half to interleaved RoPE order. ``rotary_emb.inv_freq`` buffers are dropped.

    Args:
        state_dict (Dict[str, torch.Tensor]): HF-format state dict.
        num_heads (int): ``num_attention_heads``.
        num_kv_heads (int): ``num_key_value_heads``.
        dim (int): ``hidden_size``.
        head_dim (Optional[int]): per-head dimension; defaults to ``dim // num_heads``.

    Returns:
        Dict[str, torch.Tensor]: internal-layout state dict.

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, QWEN2_FROM_HF, _FAMILY)


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 28,
    num_kv_heads: int = 4,
    dim: int = 3584,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Qwen 2 state dict -> HF names and q/k order (exact inverse of ``hf_to_tune``).

    Raises:
        ValueError: on an unknown key or a q/k tensor whose shape does not fit the head counts.
    """
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, QWEN2_FROM_HF, _FAMILY)
