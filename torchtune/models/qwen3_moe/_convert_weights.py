"""Key maps between transformers' Qwen 3 MoE layout and torchtune's internal one.

Qwen 3's maps (q/k norms, the within-head q/k permutation) plus the mixture layers: the
files hold one tensor per expert, ``model.layers.{i}.mlp.experts.{e}.{gate,up,down}_proj
.weight``, stacked here into ``layers.{i}.mlp.experts.{gate,up,down}_proj`` (``[E, h, d]``,
``[E, h, d]``, ``[E, d, h]``) and unstacked on the way back; the router
``mlp.gate.weight`` is ``mlp.router.weight``. A dense layer (``mlp_only_layers``) keeps
Qwen 3's MLP names. A streamed load reads one layer at a time, so each layer's experts
arrive together.
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

_FAMILY = "Qwen 3 MoE"

QWEN3_MOE_FROM_HF = dict(
    LLAMA_FROM_HF,
    **{
        "model.layers.{}.self_attn.q_norm.weight": "layers.{}.attn.q_norm.scale",
        "model.layers.{}.self_attn.k_norm.weight": "layers.{}.attn.k_norm.scale",
        "model.layers.{}.mlp.gate.weight": "layers.{}.mlp.router.weight",
    },
)
_HF_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_HF_EXPERT_FORMAT = "model.layers.{layer}.mlp.experts.{expert}.{proj}.weight"
_SAME = {p: p for p in ("gate_proj", "up_proj", "down_proj")}


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Always raises: there is no Meta-format Qwen 3 MoE checkpoint."""
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal Qwen 3 MoE name; returns ``state_dict``."""
    return check_internal_keys(state_dict, {**QWEN3_MOE_FROM_HF, **TUNE_EXPERT_NAMES}, _FAMILY)


def hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 4,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF Qwen 3 MoE state dict -> internal layout (experts stacked).

    Raises:
        ValueError: an unknown key, a q/k tensor that does not fit the heads, or a layer
            whose experts are not numbered 0..E-1 or differ in shape.
    """
    rest, experts = stack_experts(state_dict, _HF_EXPERT, _SAME)
    out = hf_to_tune_keys(rest, num_heads, num_kv_heads, dim, head_dim, QWEN3_MOE_FROM_HF, _FAMILY)
    out.update(experts)
    return out


def tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 4,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal Qwen 3 MoE state dict -> HF names, q/k order and one tensor per expert
    (exact inverse of ``hf_to_tune``)."""
    rest, out = unstack_experts(state_dict, _HF_EXPERT_FORMAT, _SAME)
    out.update(tune_to_hf_keys(rest, num_heads, num_kv_heads, dim, head_dim, QWEN3_MOE_FROM_HF, _FAMILY))
    return out


def tune_to_peft_adapter_weights(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 4,
    dim: int = 2048,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal LoRA adapter -> peft's names: attention as the dense models, the router ``mlp.gate``,
    and each expert's adapters one per expert under the files' per-expert names, as peft
    saves a LoRA on a per-expert checkpoint (and fuses on load into transformers 5's
    stacked experts).

    Raises:
        ValueError: on a key that is not a LoRA adapter parameter.
    """
    rest, out = peft_expert_adapters(state_dict, _HF_EXPERT_FORMAT, _SAME)
    out.update(_peft_weights(rest, num_heads, num_kv_heads, dim, head_dim))
    return out


def tune_to_peft_adapter_config(adapter_config: Dict[str, Any]) -> Dict[str, Any]:
    """peft's ``adapter_config.json`` (``torchtune.models._convert_weights``), an expert's
    projections targeted by the files' names ("gate_proj", "up_proj", "down_proj")."""
    return _peft_config(adapter_config, experts=("gate_proj", "up_proj", "down_proj"))


def peft_unsupported(adapter_config: Dict[str, Any]) -> Optional[str]:
    """Why this adapter has no faithful peft form, or None: with experts and dense layers
    (``mlp_only_layers``) both adapted, peft (0.21) retargets ``gate_proj``/``up_proj``/
    ``down_proj`` at transformers 5's stacked experts on load and drops the dense layers'
    MLP adapters without a word."""
    targets = set(adapter_config.get("target_modules", ()))
    if "experts" in targets and targets & {"w1", "w2", "w3"}:
        return ("peft would load it into transformers 5 without the dense (mlp_only_layers) layers' MLP "
                "adapters, as it retargets gate_proj/up_proj/down_proj at the stacked experts")
    return None
