"""Key-map machinery shared by every family whose checkpoints use the Llama-style decoder.

A family's ``_convert_weights.py`` is its name table plus one-liners over these helpers.

Three layouts exist (docs/design.md, "Internal state-dict layout"):

- **Meta** (``consolidated.00.pth`` from meta-llama/llama): ``layers.{i}.attention.wq.weight`` ...
- **internal**: ``layers.{i}.attn.q_proj.weight`` ...
- **HF** (transformers' ``LlamaForCausalLM`` and its kin): ``model.layers.{i}.self_attn.q_proj.weight`` ...

Meta and internal differ only in names. HF also stores the q/k projection rows permuted:
transformers implements RoPE as "rotate half" (pairs ``(x_j, x_{j + h_d/2})``) while Meta
rotates interleaved pairs ``(x_{2j}, x_{2j+1})``. ``convert_llama_weights_to_hf.py`` in
transformers reorders each head's rows so that both formulations give the same output;
``permute_qk_rows`` applies exactly that permutation (or its inverse). The permuted
dimension is the output (row) dimension, so it applies equally to a q/k bias, a LoRA
``lora_b`` of q_proj/k_proj and a DoRA magnitude (``tune_to_peft_adapter_weights``), and,
as one head, to a per-head q/k norm scale.

Name tables map external -> internal; per-layer entries use ``{}`` for the layer index.
"""

import re
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import torch

from torchtune._errors import UserValueError

LLAMA_FROM_META = {
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

LLAMA_FROM_HF = {
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
    # Present only in checkpoints whose config.json sets attention_bias / mlp_bias (Qwen 2's
    # q/k/v biases are always there); a model built without them refuses them at load.
    **{f"model.layers.{{}}.self_attn.{p}_proj.bias": f"layers.{{}}.attn.{t}.bias"
       for p, t in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "output_proj"))},
    **{f"model.layers.{{}}.mlp.{p}_proj.bias": f"layers.{{}}.mlp.{t}.bias"
       for p, t in (("gate", "w1"), ("down", "w2"), ("up", "w3"))},
}

# Buffers some exporters include that are recomputed by the model: dropped on load.
META_IGNORED = re.compile(r"^rope\.freqs$")
HF_IGNORED = re.compile(r"^(model\.)?(layers\.\d+\.self_attn\.)?rotary_emb\.inv_freq$")

# Internal names (suffixes) whose entries follow the query / key head layout.
Q_PERMUTED = ("attn.q_proj.weight", "attn.q_proj.bias", "attn.q_norm.scale")
K_PERMUTED = ("attn.k_proj.weight", "attn.k_proj.bias", "attn.k_norm.scale")

# Internal linear module -> HF module path inside a layer (the PEFT adapter names).
TUNE_TO_HF_MODULE = {
    "attn.q_proj": "self_attn.q_proj",
    "attn.k_proj": "self_attn.k_proj",
    "attn.v_proj": "self_attn.v_proj",
    "attn.output_proj": "self_attn.o_proj",
    "mlp.w1": "mlp.gate_proj",
    "mlp.w2": "mlp.down_proj",
    "mlp.w3": "mlp.up_proj",
    "mlp.router": "mlp.gate",
}

# LoRA target names (``lora_attn_modules`` and friends) -> peft ``target_modules`` names.
PEFT_TARGET_MODULES = {
    "q_proj": "q_proj",
    "k_proj": "k_proj",
    "v_proj": "v_proj",
    "output_proj": "o_proj",
    "w1": "gate_proj",
    "w2": "down_proj",
    "w3": "up_proj",
    "output": "lm_head",
    "router": "gate",
}


def invert_map(mapping: Dict[str, str]) -> Dict[str, str]:
    """``mapping`` read the other way (the tables are one-to-one)."""
    return {v: k for k, v in mapping.items()}


def map_key(key: str, mapping: Dict[str, str], source: str, family: str) -> str:
    """Rename ``key`` through ``mapping``, whose per-layer entries use ``{}`` for the index.

    Raises:
        UserValueError: if ``key`` is not in ``mapping`` (``source`` names its layout and
            ``family`` the model family, for the message).
    """
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


def rename_keys(
    state_dict: Dict[str, torch.Tensor],
    mapping: Dict[str, str],
    source: str,
    family: str,
    ignored: Optional[re.Pattern] = None,
) -> Dict[str, torch.Tensor]:
    """Rename every key of ``state_dict`` (a pure rename, e.g. Meta <-> internal), dropping
    keys that match ``ignored``."""
    out = {}
    for key, value in state_dict.items():
        if ignored is not None and ignored.match(key):
            continue
        out[map_key(key, mapping, source, family)] = value
    return out


def check_internal_keys(
    state_dict: Dict[str, torch.Tensor], from_hf: Dict[str, str], family: str
) -> Dict[str, torch.Tensor]:
    """Check that every key is an internal name of ``from_hf``; returns ``state_dict``."""
    internal = invert_map(from_hf)
    for key in state_dict:
        map_key(key, internal, "internal", family)
    return state_dict


def refuse_meta(family: str):
    """Raise for a family that has no Meta-format checkpoint.

    Raises:
        UserValueError: always.
    """
    raise UserValueError(
        f"{family} has no Meta-format checkpoint: use FullModelHFCheckpointer (or "
        "FullModelTorchTuneCheckpointer for the internal layout)"
    )


def resolve_head_dim(num_heads: int, dim: int, head_dim: Optional[int]) -> int:
    """``head_dim`` if given, else ``dim // num_heads`` (which must divide)."""
    if head_dim is not None:
        return head_dim
    if dim % num_heads:
        raise UserValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
    return dim // num_heads


def permute_qk_rows(
    t: torch.Tensor,
    n_heads: int,
    head_dim: int,
    to_hf: bool,
    name: str,
    rotary_dim: Optional[int] = None,
) -> torch.Tensor:
    """Reorder each head's rows between the interleaved and the rotate-half RoPE layouts.

    Args:
        t (torch.Tensor): ``[n_heads * head_dim, c]`` rows (a weight, or a bias/scale
            viewed as one column).
        n_heads (int): heads in ``t``.
        head_dim (int): rows per head.
        to_hf (bool): interleaved (Meta, internal) -> rotate-half (HF); False: the inverse.
        name (str): the tensor's name, for the error message.
        rotary_dim (Optional[int]): a partial-rotary model rotates only the first
            ``rotary_dim`` features of each head: only those rows are permuted, the rest
            stay in place. None: the whole head (``head_dim``).

    Returns:
        torch.Tensor: the permuted rows, same shape.

    Raises:
        UserValueError: if the shape does not fit the heads, or a dimension is odd.
    """
    rot = head_dim if rotary_dim is None else rotary_dim
    if t.dim() != 2 or t.shape[0] != n_heads * head_dim or rot % 2 or not 0 < rot <= head_dim:
        raise UserValueError(
            f"Cannot permute {name!r} for rotary layout: shape {tuple(t.shape)} does not have "
            f"{n_heads} heads x head_dim {head_dim} = {n_heads * head_dim} rows, with an even "
            f"rotary_dim {rot} <= head_dim"
        )
    cols = t.shape[1]
    heads = t.view(n_heads, head_dim, cols)
    rotated = heads[:, :rot]  # [n, rot, c]
    if to_hf:
        # Meta row (h, j, pair p) -> HF row (h, p, j): the row order of convert_llama_weights_to_hf.
        rotated = rotated.reshape(n_heads, rot // 2, 2, cols).transpose(1, 2)  # [n, 2, rot/2, c]
    else:
        rotated = rotated.reshape(n_heads, 2, rot // 2, cols).transpose(1, 2)  # [n, rot/2, 2, c]
    rotated = rotated.reshape(n_heads, rot, cols)
    if rot == head_dim:
        return rotated.reshape(n_heads * head_dim, cols)
    return torch.cat([rotated, heads[:, rot:]], dim=1).reshape(n_heads * head_dim, cols)


def permute_qk_entry(
    key: str,
    value: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    to_hf: bool,
    name: str,
    rotary_dim: Optional[int] = None,
) -> torch.Tensor:
    """Permute ``value`` if its internal name ``key`` follows the q or k head layout.

    2-D weights are permuted per head; 1-D biases per head; a q/k norm scale
    (``[head_dim]``, shared by all heads) as one head.
    """
    if key.endswith(Q_PERMUTED):
        n = num_heads
    elif key.endswith(K_PERMUTED):
        n = num_kv_heads
    else:
        return value
    if value.dim() == 2:
        return permute_qk_rows(value, n, head_dim, to_hf, name, rotary_dim)
    n = 1 if key.endswith("norm.scale") else n
    return permute_qk_rows(value.unsqueeze(1), n, head_dim, to_hf, name, rotary_dim).squeeze(1)


def hf_to_tune_keys(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int,
    num_kv_heads: int,
    dim: int,
    head_dim: Optional[int],
    from_hf: Dict[str, str],
    family: str,
    rotary_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """HF state dict -> internal: rename through ``from_hf`` and undo the q/k permutation
    (weights, biases, norm scales). ``rotary_emb.inv_freq`` buffers are dropped.

    Raises:
        UserValueError: on an unknown key or a q/k tensor whose shape does not fit the heads.
    """
    head_dim = resolve_head_dim(num_heads, dim, head_dim)
    out = {}
    for key, value in state_dict.items():
        if HF_IGNORED.match(key):
            continue
        new_key = map_key(key, from_hf, "HF", family)
        out[new_key] = permute_qk_entry(
            new_key, value, num_heads, num_kv_heads, head_dim, False, key, rotary_dim
        )
    return out


def tune_to_hf_keys(
    state_dict: Dict[str, torch.Tensor],
    num_heads: int,
    num_kv_heads: int,
    dim: int,
    head_dim: Optional[int],
    from_hf: Dict[str, str],
    family: str,
    rotary_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Internal state dict -> HF names and q/k order (exact inverse of ``hf_to_tune_keys``).

    Raises:
        UserValueError: on an unknown key or a q/k tensor whose shape does not fit the heads.
    """
    head_dim = resolve_head_dim(num_heads, dim, head_dim)
    to_hf = invert_map(from_hf)
    out = {}
    for key, value in state_dict.items():
        new_key = map_key(key, to_hf, "internal", family)
        out[new_key] = permute_qk_entry(
            key, value, num_heads, num_kv_heads, head_dim, True, key, rotary_dim
        )
    return out


_LORA_KEY = re.compile(r"^layers\.(\d+)\.(attn\.\w+|mlp\.w[123]|mlp\.router)\.(lora_a\.weight|lora_b\.weight|magnitude)$")
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
    rotary_dim: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Convert internal LoRA adapter weights to the names and layout HF peft reads.

    ``layers.{i}.attn.q_proj.lora_a.weight [r, in]`` becomes
    ``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight``; ``output.lora_*``
    becomes ``base_model.model.lm_head.lora_*``; a DoRA ``...magnitude [out]`` becomes
    ``...lora_magnitude_vector``. The ``lora_b [out, r]`` and the magnitude of q_proj/k_proj
    have their output rows permuted like the base weight, so ``W_hf + B_hf A`` is the HF
    layout of ``W + B A`` and each row keeps its magnitude (only the first ``rotary_dim``
    rows of each head for a partial-rotary model, as ``permute_qk_rows``).

    Raises:
        ValueError: on a key that is not a LoRA adapter parameter.
    """
    head_dim = resolve_head_dim(num_heads, dim, head_dim)
    out = {}
    for key, value in state_dict.items():
        m = _LORA_KEY.match(key)
        if m is not None:
            layer, module, param = m.groups()
            if module not in TUNE_TO_HF_MODULE:
                raise ValueError(f"Unexpected LoRA adapter key {key!r}: unknown module {module!r}")
            if param != "lora_a.weight" and module in ("attn.q_proj", "attn.k_proj"):
                n = num_heads if module == "attn.q_proj" else num_kv_heads
                rows = value.unsqueeze(1) if value.dim() == 1 else value  # magnitude: [out] -> [out, 1]
                value = permute_qk_rows(
                    rows, n, head_dim, to_hf=True, name=key, rotary_dim=rotary_dim
                ).reshape(value.shape)
            hf_module = f"model.layers.{layer}.{TUNE_TO_HF_MODULE[module]}"
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


def peft_target_modules(modules: Iterable[str], experts: Sequence[str] = ()) -> list:
    """peft's ``target_modules`` names for internal LoRA target names (``q_proj``, ``w1`` ...),
    each once; ``experts`` (a mixture's stacked adapters) becomes the file's names of an
    expert's projections, given in ``experts``.

    Raises:
        ValueError: on a name that is not a LoRA target.
    """
    out = []
    for m in modules:
        if m == "experts":
            names = list(experts)
        elif m in PEFT_TARGET_MODULES:
            names = [PEFT_TARGET_MODULES[m]]
        else:
            raise ValueError(
                f"Unknown LoRA target module {m!r}; expected one of {sorted(PEFT_TARGET_MODULES)}"
            )
        out += [n for n in names if n not in out]
    return out


def tune_to_peft_adapter_config(
    adapter_config: Dict[str, Any], experts: Sequence[str] = ("gate_proj", "up_proj", "down_proj")
) -> Dict[str, Any]:
    """Build a peft ``adapter_config.json`` dict from torchtune's adapter description.

    Args:
        adapter_config (Dict[str, Any]): ``{"r": int, "lora_alpha": float,
            "target_modules": list of internal module names (``q_proj``, ``k_proj``,
            ``v_proj``, ``output_proj``, ``w1``, ``w2``, ``w3``, ``output``)}``; any other
            keys (e.g. ``use_dora``, ``base_model_name_or_path``) are copied through.
        experts (Sequence[str]): the file's names of an expert's projections, peft's
            targets for ``experts`` (stacked expert adapters).

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
    out["target_modules"] = peft_target_modules(adapter_config["target_modules"], experts)
    return out


# ---------------------------------------------------------------------- mixtures of experts
# HF files hold one tensor per expert; the model stacks each projection of a layer's
# experts into one [E, ...] parameter (``layers.{i}.mlp.experts.{gate,up,down}_proj``).
_TUNE_EXPERTS = re.compile(r"^layers\.(\d+)\.mlp\.experts\.(gate_proj|up_proj|down_proj)$")
TUNE_EXPERT_NAMES = {f"layers.{{}}.mlp.experts.{p}": f"layers.{{}}.mlp.experts.{p}"
                     for p in ("gate_proj", "up_proj", "down_proj")}


def stack_experts(
    state_dict: Dict[str, torch.Tensor], hf_expert: "re.Pattern", to_tune: Dict[str, str]
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(the other tensors, the stacked experts)`` of an HF state dict.

    Args:
        state_dict: HF names.
        hf_expert: matches an expert tensor's name; groups: layer, expert, projection.
        to_tune: the file's projection name -> ours (Mixtral's ``w1`` -> ``gate_proj``).

    Raises:
        ValueError: a layer whose experts are not numbered 0..E-1 or differ in shape.
    """
    experts: Dict[Tuple[int, str], Dict[int, torch.Tensor]] = {}
    rest = {}
    for key, value in state_dict.items():
        m = hf_expert.match(key)
        if m:
            experts.setdefault((int(m.group(1)), to_tune[m.group(3)]), {})[int(m.group(2))] = value
        else:
            rest[key] = value
    stacked = {}
    for (layer, proj), by_index in experts.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise ValueError(
                f"layer {layer} {proj}: experts {sorted(by_index)} are not numbered 0..{len(by_index) - 1}"
            )
        shapes = {tuple(t.shape) for t in by_index.values()}
        if len(shapes) != 1:
            raise ValueError(f"layer {layer} {proj}: experts differ in shape {sorted(shapes)}")
        stacked[f"layers.{layer}.mlp.experts.{proj}"] = torch.stack([by_index[e] for e in range(len(by_index))])
    return rest, stacked


def unstack_experts(
    state_dict: Dict[str, torch.Tensor], hf_format: str, to_hf: Dict[str, str]
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(the other tensors, one HF tensor per expert)`` of an internal state dict;
    ``hf_format`` names an expert tensor from ``layer``, ``expert`` and ``proj``. Each is
    a copy: safetensors refuses tensors that share storage."""
    rest, out = {}, {}
    for key, value in state_dict.items():
        m = _TUNE_EXPERTS.match(key)
        if m:
            for e, tensor in enumerate(value.unbind(0)):
                out[hf_format.format(layer=m.group(1), expert=e, proj=to_hf[m.group(2)])] = tensor.clone()
        else:
            rest[key] = value
    return rest, out


_TUNE_EXPERT_ADAPTER = re.compile(r"^layers\.(\d+)\.mlp\.experts\.lora_(gate|up|down)_(a|b)$")


def peft_expert_adapters(
    state_dict: Dict[str, torch.Tensor], hf_format: str, to_hf: Dict[str, str]
) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """``(the other entries, peft's per-expert adapters)`` of an internal adapter state dict:
    ``layers.{i}.mlp.experts.lora_gate_a [E, r, d]`` becomes ``E`` tensors
    ``base_model.model.<expert e's gate projection>.lora_A.weight [r, d]``, named by
    ``hf_format`` as the file names the expert's weight (without ``.weight``), as peft saves
    a LoRA on each expert's linear; ``_b`` likewise becomes ``lora_B``. Each is a copy."""
    rest, out = {}, {}
    for key, value in state_dict.items():
        m = _TUNE_EXPERT_ADAPTER.match(key)
        if not m:
            rest[key] = value
            continue
        layer, proj, half = m.groups()
        for e, tensor in enumerate(value.unbind(0)):
            weight = hf_format.format(layer=layer, expert=e, proj=to_hf[f"{proj}_proj"])
            out[f"base_model.model.{weight[: -len('.weight')]}.lora_{half.upper()}.weight"] = tensor.clone()
    return rest, out
