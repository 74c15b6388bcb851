"""Key maps between transformers' Phi-3 layout and torchtune's internal one.

transformers' ``Phi3ForCausalLM`` stores each layer's q, k and v projections as one
``self_attn.qkv_proj.weight`` (rows: q, then k, then v) and gate and up as one
``mlp.gate_up_proj.weight`` (rows: gate, then up). ``hf_to_tune`` splits them into Llama's
HF names and then applies the shared Llama map (renames, and the q/k row permutation from
HF's rotate-half RoPE to our interleaved one); ``tune_to_hf`` undoes both, so the output is
the official layout. There is no Meta-format Phi-3 checkpoint.

PEFT adapters: peft's Phi-3 targets the fused modules; an adapter per q/k/v projection has no
exact equal there at the same rank, so no ``adapter_N_peft`` is written (the merged model
and ``adapter_N.pt`` are).
"""

import re
from typing import Dict, Optional

import torch

from torchtune.models._convert_weights import (  # Llama's names once the fused tensors are split
    check_internal_keys,
    hf_to_tune_keys,
    LLAMA_FROM_HF,
    refuse_meta,
    resolve_head_dim,
    tune_to_hf_keys,
    tune_to_peft_adapter_config,
    tune_to_peft_adapter_weights,
)

__all__ = [
    "meta_to_tune",
    "tune_to_meta",
    "hf_to_tune",
    "tune_to_hf",
    "phi3_hf_to_tune",
    "phi3_tune_to_hf",
    "tune_to_peft_adapter_weights",
    "tune_to_peft_adapter_config",
]

_FAMILY = "Phi-3"
PEFT_UNSUPPORTED = "peft's Phi-3 adapts the fused qkv_proj / gate_up_proj, not the separate projections"
_QKV = re.compile(r"^model\.layers\.(\d+)\.self_attn\.qkv_proj\.weight$")
_GATE_UP = re.compile(r"^model\.layers\.(\d+)\.mlp\.gate_up_proj\.weight$")


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Refused: Phi-3 has no Meta-format checkpoint."""
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A key check only: every key must be an internal Phi-3 name."""
    return check_internal_keys(state_dict, LLAMA_FROM_HF, _FAMILY)


def hf_to_tune(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 32,
               dim: int = 3072, head_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """transformers' Phi-3 -> internal: fused tensors split, then Llama's map.

    Raises:
        ValueError: on an unknown key, or a fused tensor whose rows do not fit the head counts.
    """
    h_d = resolve_head_dim(num_heads, dim, head_dim)
    sizes = [num_heads * h_d, num_kv_heads * h_d, num_kv_heads * h_d]
    split = {}
    for key, value in state_dict.items():
        if m := _QKV.match(key):
            if value.shape[0] != sum(sizes):
                raise ValueError(
                    f"{key} has {value.shape[0]} rows; {num_heads} q and {num_kv_heads} k/v heads "
                    f"of {h_d} need {sum(sizes)}"
                )
            for name, part in zip("qkv", value.split(sizes)):
                split[f"model.layers.{m.group(1)}.self_attn.{name}_proj.weight"] = part
        elif m := _GATE_UP.match(key):
            if value.shape[0] % 2:
                raise ValueError(f"{key} has an odd number of rows ({value.shape[0]}): not gate and up")
            gate, up = value.chunk(2)
            split[f"model.layers.{m.group(1)}.mlp.gate_proj.weight"] = gate
            split[f"model.layers.{m.group(1)}.mlp.up_proj.weight"] = up
        else:
            split[key] = value
    return hf_to_tune_keys(split, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)


def tune_to_hf(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 32,
               dim: int = 3072, head_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Internal -> transformers' Phi-3 (inverse of ``hf_to_tune``): Llama's map, then q/k/v
    and gate/up joined into the fused tensors."""
    hf = tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY)
    out = {}
    for key, value in hf.items():
        m = re.match(r"^model\.layers\.(\d+)\.(self_attn\.[qkv]_proj|mlp\.(gate|up)_proj)\.weight$", key)
        if m is None:
            out[key] = value
            continue
        layer = f"model.layers.{m.group(1)}"
        if key.endswith("q_proj.weight"):
            out[f"{layer}.self_attn.qkv_proj.weight"] = torch.cat(
                [hf[f"{layer}.self_attn.{n}_proj.weight"] for n in "qkv"])
        elif key.endswith("gate_proj.weight"):
            out[f"{layer}.mlp.gate_up_proj.weight"] = torch.cat(
                [hf[f"{layer}.mlp.gate_proj.weight"], hf[f"{layer}.mlp.up_proj.weight"]])
    return out


phi3_hf_to_tune = hf_to_tune
phi3_tune_to_hf = tune_to_hf
