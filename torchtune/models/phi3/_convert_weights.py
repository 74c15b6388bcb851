"""Key maps between transformers' Phi-3 layout and torchtune's internal one.

transformers' ``Phi3ForCausalLM`` stores each layer's q, k and v projections as one
``self_attn.qkv_proj.weight`` (rows: q, then k, then v) and gate and up as one
``mlp.gate_up_proj.weight`` (rows: gate, then up). ``hf_to_tune`` splits them into Llama's
HF names and then applies the shared Llama map (renames, and the q/k row permutation from
HF's rotate-half RoPE to our interleaved one); ``tune_to_hf`` undoes both, so the output is
the official layout. There is no Meta-format Phi-3 checkpoint.

Partial rotary (Phi-4-mini's ``partial_rotary_factor``): ``rotary_dim`` is passed on to the
q/k row permutation, which then reorders only each head's first ``rotary_dim`` rows.

PEFT adapters: peft's Phi-3 adapts the fused modules. Separate adapters ``B_q A_q``,
``B_k A_k``, ``B_v A_v`` (rank r each) are exactly one adapter of rank 3r on ``qkv_proj``:
``A = [A_q; A_k; A_v]`` stacked and ``B`` block-diagonal, since ``B A`` then stacks the three
products row-wise as ``qkv_proj`` stacks the weights. peft scales it by ``alpha / rank``,
so the fused module gets ``rank_pattern`` 3r and ``alpha_pattern`` 3 alpha: the same
``alpha / r``. A projection without an adapter gets zero rows of ``B``; gate/up
(``w1``/``w3``) fuse the same way into ``gate_up_proj``. DoRA's magnitude is per output row,
so the fused magnitude is the three stacked; a fused module only partly adapted would need
the base rows' norms, which the adapter does not hold, so that case writes no peft adapter
(``peft_unsupported``).
"""

import re
from typing import Dict, Optional

import torch

from torchtune.models import _convert_weights as _shared
from torchtune.models._convert_weights import (  # Llama's names once the fused tensors are split
    check_internal_keys,
    hf_to_tune_keys,
    LLAMA_FROM_HF,
    refuse_meta,
    resolve_head_dim,
    tune_to_hf_keys,
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
    "peft_unsupported",
]

_FAMILY = "Phi-3"
# Internal LoRA targets fused in peft's Phi-3, in the fused rows' order.
_FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("w1", "w3")}
_PEFT_NAME = {"output_proj": "o_proj", "w2": "down_proj", "output": "lm_head"}
_PEFT_MEMBER = re.compile(
    r"^(base_model\.model\.model\.layers\.\d+)\.(self_attn|mlp)\.(q|k|v|gate|up)_proj\."
    r"(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$"
)
_QKV = re.compile(r"^model\.layers\.(\d+)\.self_attn\.qkv_proj\.weight$")
_GATE_UP = re.compile(r"^model\.layers\.(\d+)\.mlp\.gate_up_proj\.weight$")


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Refused: Phi-3 has no Meta-format checkpoint."""
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A key check only: every key must be an internal Phi-3 name."""
    return check_internal_keys(state_dict, LLAMA_FROM_HF, _FAMILY)


def hf_to_tune(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 32,
               dim: int = 3072, head_dim: Optional[int] = None,
               rotary_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
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
    return hf_to_tune_keys(split, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY, rotary_dim)


def tune_to_hf(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 32,
               dim: int = 3072, head_dim: Optional[int] = None,
               rotary_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Internal -> transformers' Phi-3 (inverse of ``hf_to_tune``): Llama's map, then q/k/v
    and gate/up joined into the fused tensors."""
    hf = tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, LLAMA_FROM_HF, _FAMILY, rotary_dim)
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


def peft_unsupported(adapter_config: Dict) -> Optional[str]:
    """Why this adapter has no exact peft form, or None (module docstring)."""
    modules = set(adapter_config.get("target_modules", ()))
    if adapter_config.get("use_dora"):
        for fused, members in _FUSED.items():
            if 0 < len(modules & set(members)) < len(members):
                return (f"a DoRA adapter on only some of {', '.join(members)} has no peft form "
                        f"on the fused {fused} (its other rows' magnitudes are the base weights' norms)")
    return None


def tune_to_peft_adapter_config(adapter_config: Dict) -> Dict:
    """peft's config: fused target modules, and ``rank_pattern``/``alpha_pattern`` that give
    each fused module the summed rank at the same ``alpha / r`` (module docstring)."""
    config = _shared.tune_to_peft_adapter_config(adapter_config)
    modules = list(adapter_config["target_modules"])
    r, alpha = adapter_config["r"], adapter_config["lora_alpha"]
    targets, ranks, alphas = [], {}, {}
    for m in modules:
        fused = next((f for f, members in _FUSED.items() if m in members), None)
        name = fused or _PEFT_NAME.get(m, m)
        if name not in targets:
            targets.append(name)
        if fused is not None:
            n = sum(member in modules for member in _FUSED[fused])
            ranks[fused], alphas[fused] = r * n, alpha * n
    config["target_modules"] = targets
    config["rank_pattern"] = {k: v for k, v in ranks.items() if v != r}
    config["alpha_pattern"] = {k: alphas[k] for k in config["rank_pattern"]}
    return config


def tune_to_peft_adapter_weights(state_dict: Dict[str, torch.Tensor], num_heads: int = 32,
                                 num_kv_heads: int = 32, dim: int = 3072, head_dim: Optional[int] = None,
                                 rotary_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Internal adapter -> peft's Phi-3 layout: Llama's per-projection peft tensors, then
    q/k/v and gate/up fused (module docstring)."""
    h_d = resolve_head_dim(num_heads, dim, head_dim)
    per_module = _shared.tune_to_peft_adapter_weights(
        state_dict, num_heads, num_kv_heads, dim, head_dim, rotary_dim)
    out: Dict[str, torch.Tensor] = {}
    groups: Dict[tuple, Dict[str, Dict[str, torch.Tensor]]] = {}
    for key, value in per_module.items():
        m = _PEFT_MEMBER.match(key)
        if m is None:
            out[key] = value
            continue
        prefix, block, member, param = m.groups()
        fused = "self_attn.qkv_proj" if block == "self_attn" else "mlp.gate_up_proj"
        groups.setdefault((prefix, fused), {}).setdefault(member, {})[param] = value
    rows = {"q": num_heads * h_d, "k": num_kv_heads * h_d, "v": num_kv_heads * h_d}
    for (prefix, fused), members in groups.items():
        order = ("q", "k", "v") if fused.endswith("qkv_proj") else ("gate", "up")
        present = [n for n in order if n in members]
        a = torch.cat([members[n]["lora_A.weight"] for n in present])  # [sum r, in]
        first_b = members[present[0]]["lora_B.weight"]
        b_blocks, col = [], 0
        for n in order:
            out_rows = rows[n] if n in rows else first_b.shape[0]  # gate and up: same size
            block = first_b.new_zeros(out_rows, a.shape[0])
            if n in members:
                b = members[n]["lora_B.weight"]
                block[:, col:col + b.shape[1]] = b
                col += b.shape[1]
            b_blocks.append(block)
        out[f"{prefix}.{fused}.lora_A.weight"] = a
        out[f"{prefix}.{fused}.lora_B.weight"] = torch.cat(b_blocks)
        if any("lora_magnitude_vector" in members[n] for n in present):
            if len(present) != len(order):
                raise ValueError(f"{prefix}.{fused}: DoRA on only {present} has no peft form")
            out[f"{prefix}.{fused}.lora_magnitude_vector"] = torch.cat(
                [members[n]["lora_magnitude_vector"] for n in order])
    return out


phi3_hf_to_tune = hf_to_tune
phi3_tune_to_hf = tune_to_hf
