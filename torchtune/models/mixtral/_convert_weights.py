"""Key maps between transformers' Mixtral layout and torchtune's internal one.

Llama's names for attention and norms (q/k rows permuted for our interleaved RoPE); the
mixture of each layer as the files hold it: the router ``block_sparse_moe.gate.weight`` is
``mlp.router.weight``, and each expert's ``block_sparse_moe.experts.{e}.w1/w3/w2.weight``
(gate, up, down) is row ``e`` of ``mlp.experts.gate_proj`` / ``up_proj`` / ``down_proj``.
"""

import re
from typing import Any, Dict, Optional

import torch

from torchtune.models._convert_weights import (
    check_internal_keys,
    hf_to_tune_keys,
    LLAMA_FROM_HF,
    refuse_meta,
    stack_experts,
    TUNE_EXPERT_NAMES,
    tune_to_hf_keys,
    peft_expert_adapters,
    tune_to_peft_adapter_config as _peft_config,
    tune_to_peft_adapter_weights as _peft_weights,
    unstack_experts,
)

__all__ = [
    "meta_to_tune",
    "tune_to_meta",
    "hf_to_tune",
    "tune_to_hf",
    "tune_to_peft_adapter_weights",
    "tune_to_peft_adapter_config",
]

_FAMILY = "Mixtral"

MIXTRAL_FROM_HF = dict(
    {k: v for k, v in LLAMA_FROM_HF.items() if ".mlp." not in k},
    **{"model.layers.{}.block_sparse_moe.gate.weight": "layers.{}.mlp.router.weight"},
)
_HF_EXPERT = re.compile(r"^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\.(w1|w2|w3)\.weight$")
_HF_EXPERT_FORMAT = "model.layers.{layer}.block_sparse_moe.experts.{expert}.{proj}.weight"
_TO_TUNE = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}
_TO_HF = {v: k for k, v in _TO_TUNE.items()}


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: Mixtral is read in the HF layout."""
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Mixtral name; returns ``state_dict``."""
    return check_internal_keys(state_dict, {**MIXTRAL_FROM_HF, **TUNE_EXPERT_NAMES}, _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 8,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF Mixtral state dict -> internal layout (experts stacked).

    Raises:
        ValueError: an unknown key, a q/k tensor that does not fit the heads, or a layer
            whose experts are not numbered 0..E-1 or differ in shape.
    """
    rest, experts = stack_experts(state_dict, _HF_EXPERT, _TO_TUNE)
    out = hf_to_tune_keys(rest, num_heads, num_kv_heads, dim, head_dim, MIXTRAL_FROM_HF, _FAMILY)
    out.update(experts)
    return out


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 8,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Mixtral state dict -> HF names, q/k order and one tensor per expert (exact
    inverse of ``hf_to_tune``)."""
    rest, out = unstack_experts(state_dict, _HF_EXPERT_FORMAT, _TO_HF)
    out.update(tune_to_hf_keys(rest, num_heads, num_kv_heads, dim, head_dim, MIXTRAL_FROM_HF, _FAMILY))
    return out


def tune_to_peft_adapter_weights(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 8,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal LoRA adapter -> peft's names: attention as the dense models, the router ``block_sparse_moe.gate`` (the files' name; peft renames it for transformers 5 on load),
    and each expert's adapters one per expert under the files' per-expert names, as peft
    saves a LoRA on a per-expert checkpoint (and fuses on load into transformers 5's
    stacked experts).

    Raises:
        ValueError: on a key that is not a LoRA adapter parameter.
    """
    rest, out = peft_expert_adapters(state_dict, _HF_EXPERT_FORMAT, _TO_HF)
    for key, value in _peft_weights(rest, num_heads, num_kv_heads, dim, head_dim).items():
        out[key.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = value
    return out


def tune_to_peft_adapter_config(adapter_config: Dict[str, Any]) -> Dict[str, Any]:
    """peft's ``adapter_config.json`` (``torchtune.models._convert_weights``), an expert's
    projections targeted by the files' names ("w1", "w3", "w2")."""
    return _peft_config(adapter_config, experts=("w1", "w3", "w2"))
