"""Key maps between Llama 2's external checkpoint layouts and torchtune's internal one.

Three layouts exist:

- **Meta** (``consolidated.00.pth`` from meta-llama/llama): ``layers.{i}.attention.wq.weight`` ...
- **internal** (see docs/design.md): ``layers.{i}.attn.q_proj.weight`` ...
- **HF** (transformers' ``LlamaForCausalLM``): ``model.layers.{i}.self_attn.q_proj.weight`` ...

Meta and internal differ only in names. HF also stores the q/k projection rows permuted:
transformers implements RoPE as "rotate half" (pairs ``(x_j, x_{j + h_d/2})``) while Meta
rotates interleaved pairs ``(x_{2j}, x_{2j+1})``. ``convert_llama_weights_to_hf.py`` in
transformers reorders each head's rows so that both formulations give the same output;
``tune_to_hf`` applies exactly that permutation and ``hf_to_tune`` its inverse. The permuted
dimension is the output (row) dimension, so it applies equally to a LoRA ``lora_b`` of
q_proj/k_proj, which ``tune_to_peft_adapter_weights`` relies on.
"""

import re
from typing import Any, Dict, Iterable, Optional

import torch

from torchtune._errors import UserValueError

__all__ = [
    "meta_to_tune",
    "tune_to_meta",
    "hf_to_tune",
    "tune_to_hf",
    "tune_to_peft_adapter_weights",
    "tune_to_peft_adapter_config",
]

# Non-layer keys and per-layer keys (with "{}" for the layer index): external -> internal.
_FROM_META = {
    "tok_embeddings.weight": "tok_embeddings.weight",
    "norm.weight": "norm.scale",
    "output.weight": "output.weight",
    "layers.{}.attention.wq.weight": "layers.{}.attn.q_proj.weight",
    "layers.{}.attention.wk.weight": "layers.{}.attn.k_proj.weight",
    "layers.{}.attention.wv.weight": "layers.{}.attn.v_proj.weight",
    "layers.{}.attention.wo.weight": "layers.{}.attn.output_proj.weight",
    "layers.{}.attention_norm.weight": "layers.{}.sa_norm.scale",
    "layers.{}.ffn_norm.weight": "layers.{}.mlp_norm.scale",
    "layers.{}.feed_forward.w1.weight": "layers.{}.mlp.w1.weight",
    "layers.{}.feed_forward.w2.weight": "layers.{}.mlp.w2.weight",
    "layers.{}.feed_forward.w3.weight": "layers.{}.mlp.w3.weight",
}

_FROM_HF = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.scale",
    "lm_head.weight": "output.weight",
    "model.layers.{}.self_attn.q_proj.weight": "layers.{}.attn.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight": "layers.{}.attn.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight": "layers.{}.attn.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight": "layers.{}.attn.output_proj.weight",
    "model.layers.{}.input_layernorm.weight": "layers.{}.sa_norm.scale",
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.mlp_norm.scale",
    "model.layers.{}.mlp.gate_proj.weight": "layers.{}.mlp.w1.weight",
    "model.layers.{}.mlp.down_proj.weight": "layers.{}.mlp.w2.weight",
    "model.layers.{}.mlp.up_proj.weight": "layers.{}.mlp.w3.weight",
}

# Buffers some exporters include that are recomputed by the model: dropped on load.
_META_IGNORED = re.compile(r"^rope\.freqs$")
_HF_IGNORED = re.compile(r"^(model\.)?(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$")

# Internal linear module -> (HF module path inside a layer). Used for the PEFT adapter map.
_TUNE_TO_HF_MODULE = {
    "attn.q_proj": "self_attn.q_proj",
    "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj",
    "attn.output_proj": "self_attn.o_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.down_proj",
    "mlp.w3": "mlp.up_proj",
}


def _invert(mapping: Dict[str, str]) -> Dict[str, str]:
    return {v: k for k, v in mapping.items()}


def _map_key(key: str, mapping: Dict[str, str], source: str, family: str = "Llama 2") -> str:
    """Rename ``key`` through ``mapping``, whose per-layer entries use ``{}`` for the index."""
    if key in mapping:
        return mapping[key]
    layer = re.search(r"(?<=layers\.)\d+(?=\.)", key)
    if layer is not None:
        abstract = key[: layer.start()] + "{}" + key[layer.end() :]
        if abstract in mapping:
            return mapping[abstract].format(layer.group(0))
    raise UserValueError(
        f"Unexpected key {key!r}: it is not a {family} parameter name in the {source} layout "
        f"(is this a {family} checkpoint in that layout?)"
    )


def _convert(
    state_dict: Dict[str, torch.Tensor],
    mapping: Dict[str, str],
    source: str,
    ignored: Optional[re.Pattern] = None,
    family: str = "Llama 2",
) -> Dict[str, torch.Tensor]:
    out = {}
    for key, value in state_dict.items():
        if ignored is not None and ignored.match(key):
            continue
        out[_map_key(key, mapping, source, family)] = value
    return out


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert a Meta-format Llama 2 state dict to the internal layout (a pure rename).

    Args:
        state_dict (Dict[str, torch.Tensor]): Meta-format state dict; ``rope.freqs`` is dropped.

    Returns:
        Dict[str, torch.Tensor]: the same tensors under internal names.

    Raises:
        ValueError: if a key is not a Llama 2 Meta parameter name.
    """
    return _convert(state_dict, _FROM_META, "Meta", _META_IGNORED)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Convert an internal Llama 2 state dict to Meta's names (inverse of ``meta_to_tune``).

    Raises:
        ValueError: if a key is not an internal Llama 2 parameter name.
    """
    return _convert(state_dict, _invert(_FROM_META), "internal")


def _permute_rows(
    t: torch.Tensor, n_heads: int, head_dim: int, to_hf: bool, name: str
) -> torch.Tensor:
    """Reorder each head's rows between the interleaved and the rotate-half RoPE layouts."""
    if t.dim() != 2 or t.shape[0] != n_heads * head_dim or head_dim % 2:
        raise UserValueError(
            f"Cannot permute {name!r} for rotary layout: shape {tuple(t.shape)} does not have "
            f"{n_heads} heads x head_dim {head_dim} = {n_heads * head_dim} rows (even head_dim)"
        )
    cols = t.shape[1]
    if to_hf:
        # Meta row (h, j, pair p) -> HF row (h, p, j): the row order of convert_llama_weights_to_hf.
        t = t.view(n_heads, head_dim // 2, 2, cols).transpose(1, 2)  # [n, 2, h_d/2, c]
    else:
        t = t.view(n_heads, 2, head_dim // 2, cols).transpose(1, 2)  # [n, h_d/2, 2, c]
    return t.reshape(n_heads * head_dim, cols)


def _head_dim(num_heads: int, dim: int, head_dim: Optional[int]) -> int:
    if head_dim is not None:
        return head_dim
    if dim % num_heads:
        raise UserValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
    return dim // num_heads


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
    return _hf_to_tune(state_dict, num_heads, num_kv_heads, dim, head_dim, "Llama 2")


def _hf_to_tune(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int,
    num_kv_heads: int,
    dim: int,
    head_dim: Optional[int],
    family: str,
) -> Dict[str, torch.Tensor]:
    """``hf_to_tune`` for any family sharing Llama 2's names (``family`` is for messages)."""
    head_dim = _head_dim(num_heads, dim, head_dim)
    out = {}
    for key, value in state_dict.items():
        if _HF_IGNORED.match(key):
            continue
        new_key = _map_key(key, _FROM_HF, "HF", family)
        if new_key.endswith("attn.q_proj.weight"):
            value = _permute_rows(value, num_heads, head_dim, to_hf=False, name=key)
        elif new_key.endswith("attn.k_proj.weight"):
            value = _permute_rows(value, num_kv_heads, head_dim, to_hf=False, name=key)
        out[new_key] = value
    return out


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
    return _tune_to_hf(state_dict, num_heads, num_kv_heads, dim, head_dim, "Llama 2")


def _tune_to_hf(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int,
    num_kv_heads: int,
    dim: int,
    head_dim: Optional[int],
    family: str,
) -> Dict[str, torch.Tensor]:
    """``tune_to_hf`` for any family sharing Llama 2's names (``family`` is for messages)."""
    head_dim = _head_dim(num_heads, dim, head_dim)
    to_hf = _invert(_FROM_HF)
    out = {}
    for key, value in state_dict.items():
        new_key = _map_key(key, to_hf, "internal", family)
        if key.endswith("attn.q_proj.weight"):
            value = _permute_rows(value, num_heads, head_dim, to_hf=True, name=key)
        elif key.endswith("attn.k_proj.weight"):
            value = _permute_rows(value, num_kv_heads, head_dim, to_hf=True, name=key)
        out[new_key] = value
    return out


_LORA_KEY = re.compile(r"^layers\.(\d+)\.(attn\.\w+|mlp\.w[123])\.(lora_a\.weight|lora_b\.weight|magnitude)$")
_LORA_OUTPUT_KEY = re.compile(r"^output\.(lora_a\.weight|lora_b\.weight|magnitude)$")
# Internal adapter parameter -> peft's name for it (the DoRA magnitude is a bare vector in a
# peft file saved by ``save_pretrained``: ``...q_proj.lora_magnitude_vector`` [out]).
_PEFT_PARAM = {
    "lora_a.weight": "lora_A.weight",
    "lora_b.weight": "lora_B.weight",
    "magnitude": "lora_magnitude_vector",
}


def tune_to_peft_adapter_weights(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int = 32,
    num_kv_heads: int = 32,
    dim: int = 4096,
    head_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Convert internal LoRA adapter weights to the names and layout HF peft reads.

    ``layers.{i}.attn.q_proj.lora_a.weight [r, in]`` becomes
    ``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight``; ``output.lora_*``
    becomes ``base_model.model.lm_head.lora_*``; a DoRA ``...magnitude [out]`` becomes
    ``...lora_magnitude_vector``. The ``lora_b [out, r]`` and the magnitude of q_proj/k_proj
    have their output rows permuted like the base weight, so ``W_hf + B_hf A`` is the HF
    layout of ``W + B A`` and each row keeps its magnitude.

    Raises:
        ValueError: on a key that is not a LoRA adapter parameter.
    """
    head_dim = _head_dim(num_heads, dim, head_dim)
    out = {}
    for key, value in state_dict.items():
        m = _LORA_KEY.match(key)
        if m is not None:
            layer, module, param = m.groups()
            if module not in _TUNE_TO_HF_MODULE:
                raise ValueError(f"Unexpected LoRA adapter key {key!r}: unknown module {module!r}")
            if param != "lora_a.weight" and module in ("attn.q_proj", "attn.k_proj"):
                n = num_heads if module == "attn.q_proj" else num_kv_heads
                rows = value.unsqueeze(1) if value.dim() == 1 else value  # magnitude: [out] -> [out, 1]
                value = _permute_rows(rows, n, head_dim, to_hf=True, name=key).reshape(value.shape)
            hf_module = f"model.layers.{layer}.{_TUNE_TO_HF_MODULE[module]}"
        else:
            m = _LORA_OUTPUT_KEY.match(key)
            if m is None:
                raise ValueError(
                    f"Unexpected key {key!r} in a LoRA adapter state dict: expected "
                    "'layers.{i}.<module>.lora_a.weight' / '...lora_b.weight' / '...magnitude'"
                )
            param, hf_module = m.group(1), "lm_head"
        out[f"base_model.model.{hf_module}.{_PEFT_PARAM[param]}"] = value
    return out


def _hf_module_names(modules: Iterable[str]) -> list:
    names = {
        "q_proj": "q_proj",
        "k_proj": "k_proj",
        "v_proj": "v_proj",
        "output_proj": "o_proj",
        "w1": "gate_proj",
        "w2": "down_proj",
        "w3": "up_proj",
        "output": "lm_head",
    }
    out = []
    for m in modules:
        if m not in names:
            raise ValueError(f"Unknown LoRA target module {m!r}; expected one of {sorted(names)}")
        out.append(names[m])
    return out


def tune_to_peft_adapter_config(adapter_config: Dict[str, Any]) -> Dict[str, Any]:
    """Build a peft ``adapter_config.json`` dict from torchtune's adapter description.

    Args:
        adapter_config (Dict[str, Any]): ``{"r": int, "lora_alpha": float,
            "target_modules": list of internal module names (``q_proj``, ``k_proj``,
            ``v_proj``, ``output_proj``, ``w1``, ``w2``, ``w3``, ``output``)}``; any other
            keys (e.g. ``use_dora``, ``base_model_name_or_path``) are copied through.

    Returns:
        Dict[str, Any]: a config peft's ``PeftModel.from_pretrained`` accepts.

    Raises:
        ValueError: if ``r``, ``lora_alpha`` or ``target_modules`` is missing.
    """
    for required in ("r", "lora_alpha", "target_modules"):
        if required not in adapter_config:
            raise ValueError(f"adapter_config is missing {required!r}: got {sorted(adapter_config)}")
    out = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    out.update({k: v for k, v in adapter_config.items() if k != "target_modules"})
    out["target_modules"] = _hf_module_names(adapter_config["target_modules"])
    return out
