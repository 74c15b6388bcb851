"""Key maps between transformers' Qwen 2 / 2.5 layout and torchtune's internal one.

Qwen has no Meta-format checkpoint: the external layout is transformers'
``Qwen2ForCausalLM`` (``model.layers.{i}.self_attn.q_proj.weight`` ...). Names are Llama's
(``torchtune.models.llama2._convert_weights``) plus the q/k/v projection biases
(``self_attn.{q,k,v}_proj.bias`` <-> ``layers.{i}.attn.{q,k,v}_proj.bias``).

Our RoPE rotates interleaved pairs ``(x_{2j}, x_{2j+1})`` (Meta's layout) while transformers'
Qwen rotates halves ``(x_j, x_{j + h_d/2})``, so ``hf_to_tune`` reorders each head's q/k
output rows exactly as Llama 2's ``hf_to_tune`` does, and applies the same reordering to the
q/k bias entries (a bias is indexed by output row); ``tune_to_hf`` undoes it. The permuted
dimension is the output dimension, so the peft adapter map permutes ``lora_b`` of q/k the
same way (Llama 2's ``tune_to_peft_adapter_weights``, re-exported here).

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

from torchtune._errors import UserValueError
from torchtune.models.llama2 import _convert_weights as _llama2
from torchtune.models.llama2._convert_weights import (  # same HF module names as Llama
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
_FROM_HF = dict(
    _llama2._FROM_HF,
    **{
        f"model.layers.{{}}.self_attn.{p}_proj.bias": f"layers.{{}}.attn.{p}_proj.bias"
        for p in ("q", "k", "v")
    },
)

# Internal names (suffixes after ``layers.{i}.``) whose entries follow the q / k head layout.
_Q_PERMUTED = ("attn.q_proj.weight", "attn.q_proj.bias", "attn.q_norm.scale")
_K_PERMUTED = ("attn.k_proj.weight", "attn.k_proj.bias", "attn.k_norm.scale")


def _permute(
    t: torch.Tensor, n_heads: int, head_dim: int, to_hf: bool, name: str
) -> torch.Tensor:
    """Llama's within-head row permutation, for 2-D weights and for 1-D biases/scales.

    A q/k norm scale (``[head_dim]``, shared by all heads; ``name`` ends in ``norm.scale``
    or ``norm.weight``) is permuted as one head."""
    if t.dim() == 1:
        n = 1 if name.endswith(("norm.scale", "norm.weight")) else n_heads
        return _llama2._permute_rows(t.unsqueeze(1), n, head_dim, to_hf, name).squeeze(1)
    return _llama2._permute_rows(t, n_heads, head_dim, to_hf, name)


def _permute_qk(
    key: str, value: torch.Tensor, num_heads: int, num_kv_heads: int, head_dim: int, to_hf: bool, name: str
) -> torch.Tensor:
    if key.endswith(_Q_PERMUTED):
        return _permute(value, num_heads, head_dim, to_hf, name)
    if key.endswith(_K_PERMUTED):
        return _permute(value, num_kv_heads, head_dim, to_hf, name)
    return value


def _hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int,
    num_kv_heads: int,
    dim: int,
    head_dim: Optional[int],
    mapping: Dict[str, str],
    family: str,
) -> Dict[str, torch.Tensor]:
    head_dim = _llama2._head_dim(num_heads, dim, head_dim)
    out = {}
    for key, value in state_dict.items():
        if _llama2._HF_IGNORED.match(key):
            continue
        new_key = _llama2._map_key(key, mapping, "HF", family)
        out[new_key] = _permute_qk(new_key, value, num_heads, num_kv_heads, head_dim, False, key)
    return out


def _tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int,
    num_kv_heads: int,
    dim: int,
    head_dim: Optional[int],
    mapping: Dict[str, str],
    family: str,
) -> Dict[str, torch.Tensor]:
    head_dim = _llama2._head_dim(num_heads, dim, head_dim)
    to_hf = _llama2._invert(mapping)
    out = {}
    for key, value in state_dict.items():
        new_key = _llama2._map_key(key, to_hf, "internal", family)
        out[new_key] = _permute_qk(key, value, num_heads, num_kv_heads, head_dim, True, key)
    return out


def _no_meta(family: str):
    raise UserValueError(
        f"{family} has no Meta-format checkpoint: use FullModelHFCheckpointer (or "
        "FullModelTorchTuneCheckpointer for the internal layout)"
    )


def _check_internal(
    state_dict: Dict[str, torch.Tensor], mapping: Dict[str, str], family: str
) -> Dict[str, torch.Tensor]:
    internal = _llama2._invert(mapping)
    for key in state_dict:
        _llama2._map_key(key, internal, "internal", family)
    return state_dict


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: there is no Meta-format Qwen 2 checkpoint.

    Raises:
        UserValueError: always.
    """
    _no_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Qwen 2 name; returns ``state_dict`` unchanged
    (there is no Meta layout to rename to).

    Raises:
        ValueError: on a key that is not an internal Qwen 2 parameter name.
    """
    return _check_internal(state_dict, _FROM_HF, _FAMILY)


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
    return _hf_to_tune(state_dict, num_heads, num_kv_heads, dim, head_dim, _FROM_HF, _FAMILY)


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
    return _tune_to_hf(state_dict, num_heads, num_kv_heads, dim, head_dim, _FROM_HF, _FAMILY)
