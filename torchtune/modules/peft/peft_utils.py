"""Helpers for models with adapters: list, freeze, validate and merge."""

from typing import Any, Dict, Iterable, List, Optional, Protocol, runtime_checkable

import torch
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules.low_precision import dequantize, is_nf4
from torchtune.modules.moe import EXPERT_ADAPTERS, unflatten_nf4_experts


@runtime_checkable
class AdapterModule(Protocol):
    """A module that owns adapter parameters, listed by name relative to itself."""

    def adapter_params(self) -> list:
        ...


def get_adapter_params(model: nn.Module) -> Dict[str, nn.Parameter]:
    """Collect the adapter parameters of every ``AdapterModule`` in ``model``.

    Args:
        model (nn.Module): a model containing adapter modules (e.g. ``LoRALinear``).

    Returns:
        Dict[str, nn.Parameter]: full parameter name (as in ``model.named_parameters()``)
        to parameter.
    """
    params = {}
    for module_name, module in model.named_modules():
        if isinstance(module, AdapterModule) and callable(module.adapter_params):
            for name in module.adapter_params():
                full = f"{module_name}.{name}" if module_name else name
                params[full] = module.get_parameter(name)
    return params


def get_lora_module_names(
    lora_attn_modules: Iterable[str], apply_lora_to_mlp: bool, apply_lora_to_output: bool
) -> List[str]:
    """The internal names of the linear layers a LoRA builder adapts, from its arguments:
    the attention projections given, then ``w1``, ``w2``, ``w3`` and ``output`` as asked (the
    ``target_modules`` of the adapter config a recipe saves).

    Args:
        lora_attn_modules (Iterable[str]): any of ``q_proj``, ``k_proj``, ``v_proj``,
            ``output_proj``.
        apply_lora_to_mlp (bool): the MLP's three projections are adapted.
        apply_lora_to_output (bool): the final output projection is adapted.

    Returns:
        List[str]: the names, in that order.
    """
    names = list(lora_attn_modules)
    if apply_lora_to_mlp:
        names += ["w1", "w2", "w3"]
    if apply_lora_to_output:
        names.append("output")
    return names


def get_lora_adapter_config(model: nn.Module) -> Dict[str, Any]:
    """The adapter settings of a built LoRA model, read from its LoRA layers (not restated
    from the builder's arguments and defaults): what a recipe saves as ``adapter_config``.

    Args:
        model (nn.Module): a model with LoRA layers (modules with ``adapter_params``,
            ``rank``, ``alpha`` and ``use_dora``, as ``LoRALinear``).

    Returns:
        Dict[str, Any]: ``{"r": int, "lora_alpha": float, "target_modules": [...],
        "use_dora": bool}``; ``target_modules`` holds the last component of each adapted
        module's name (``q_proj``, ``w1``, ``output`` ...), once each, in model order.

    Raises:
        UserValueError: if the model has no LoRA layer, or its LoRA layers differ in rank,
            alpha or use_dora (one adapter config cannot describe them).
    """
    settings: Dict[tuple, str] = {}
    targets: List[str] = []
    for name, module in model.named_modules():
        if not (isinstance(module, AdapterModule) and hasattr(module, "rank") and hasattr(module, "alpha")):
            continue
        settings.setdefault((module.rank, module.alpha, bool(getattr(module, "use_dora", False))), name)
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in targets:
            targets.append(leaf)
    if not settings:
        raise UserValueError("The model has no LoRA layer: build it with a lora_* builder")
    if len(settings) > 1:
        seen = "; ".join(f"{n}: rank {r}, alpha {a}, use_dora {d}" for (r, a, d), n in settings.items())
        raise UserValueError(f"The model's LoRA layers differ in rank, alpha or use_dora ({seen})")
    ((rank, alpha, use_dora),) = settings
    return {"r": rank, "lora_alpha": alpha, "target_modules": targets, "use_dora": use_dora}


def initialize_dora_magnitudes(model: nn.Module) -> None:
    """Set every DoRA magnitude in ``model`` to the row norms of its current weights.

    Call it after the base weights are loaded and before an adapter checkpoint is (which
    brings its own magnitudes); a model without DoRA is left unchanged.

    Args:
        model (nn.Module): a model whose adapter modules may use DoRA.
    """
    for module in model.modules():
        if getattr(module, "use_dora", False) and callable(getattr(module, "initialize_dora_magnitude", None)):
            module.initialize_dora_magnitude()


def set_trainable_params(model: nn.Module, adapter_params: Iterable[str]) -> None:
    """Make exactly the named parameters trainable and freeze all others.

    Args:
        model (nn.Module): the model, modified in place.
        adapter_params (Iterable[str]): parameter names to train (e.g. the keys of
            ``get_adapter_params(model)``).

    Raises:
        ValueError: if a name is not a parameter of ``model``.
    """
    names = set(adapter_params)
    all_names = {n for n, _ in model.named_parameters()}
    unknown = sorted(names - all_names)
    if unknown:
        raise ValueError(f"set_trainable_params: {unknown[0]!r} is not a parameter of the model")
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)


def validate_missing_and_unexpected_for_lora(
    model: nn.Module,
    *,
    base_missing: Optional[Iterable[str]] = None,
    base_unexpected: Optional[Iterable[str]] = None,
    lora_missing: Optional[Iterable[str]] = None,
    lora_unexpected: Optional[Iterable[str]] = None,
) -> None:
    """Check the key lists returned by ``load_state_dict(..., strict=False)`` on a LoRA model.

    Typical use::

        base_missing, base_unexpected = model.load_state_dict(base_sd, strict=False)
        lora_missing, lora_unexpected = model.load_state_dict(adapter_sd, strict=False)
        validate_missing_and_unexpected_for_lora(
            model, base_missing=base_missing, base_unexpected=base_unexpected,
            lora_missing=lora_missing, lora_unexpected=lora_unexpected)

    The base checkpoint may miss only adapter keys; the adapter checkpoint (if loaded) may
    miss only base keys; neither may bring keys the model lacks.

    Args:
        model (nn.Module): the LoRA model the state dicts were loaded into.
        base_missing (Optional[Iterable[str]]): missing keys from loading the base weights.
        base_unexpected (Optional[Iterable[str]]): unexpected keys from the base weights.
        lora_missing (Optional[Iterable[str]]): missing keys from loading the adapter
            weights; None if no adapter checkpoint was loaded.
        lora_unexpected (Optional[Iterable[str]]): unexpected keys from the adapter weights.

    Raises:
        ValueError: naming the first offending key.
    """
    adapter_keys = set(get_adapter_params(model))
    for key in sorted(base_missing or []):
        if key not in adapter_keys:
            raise UserValueError(f"Base checkpoint is missing the non-adapter key {key!r}")
    for key in sorted(base_unexpected or []):
        raise UserValueError(f"Base checkpoint has the key {key!r}, which the model does not have")
    for key in sorted(lora_missing or []):
        if key in adapter_keys:
            raise UserValueError(f"Adapter checkpoint is missing the adapter key {key!r}")
    for key in sorted(lora_unexpected or []):
        raise UserValueError(f"Adapter checkpoint has the key {key!r}, which the model does not have")


def get_merged_lora_ckpt(
    state_dict: Dict[str, torch.Tensor],
    rank: int,
    alpha: float,
    dtype: Optional[torch.dtype] = None,
) -> Dict[str, torch.Tensor]:
    """Fold every adapter into its base weight.

    LoRA: ``W' = W + s * B @ A`` with ``s = alpha / rank``. DoRA (a ``<m>.magnitude`` key):
    ``W' = m[:, None] * V / ||V||_row`` with ``V = W + s * B @ A``, as peft's
    ``merge_and_unload``. The input is not modified. The merge runs in fp32 and the result is
    cast back, so a bf16 merge does not lose the small update to rounding twice. An NF4
    base weight (QLoRA) is dequantized first; so is any other NF4 tensor in the dict.
    Stacked expert adapters (``<m>.experts.lora_gate_a`` ...) fold into ``<m>.experts.
    {gate,up,down}_proj`` expert by expert, and NF4 expert stacks come back ``[E, out, in]``.

    Args:
        state_dict (Dict[str, torch.Tensor]): an adapted model's state dict, with
            ``<m>.weight``, ``<m>.lora_a.weight``, ``<m>.lora_b.weight`` and, for DoRA,
            ``<m>.magnitude``.
        rank (int): LoRA rank r.
        alpha (float): LoRA alpha.
        dtype (Optional[torch.dtype]): dtype of every floating-point tensor of the result
            (e.g. the input checkpoint's, whatever the compute dtype); None keeps each
            tensor's own (for NF4, the dtype it was quantized from).

    Returns:
        Dict[str, torch.Tensor]: the base model's state dict, without adapter keys.

    Raises:
        ValueError: if an adapter lacks its other half or its base weight, or the rank differs.
    """
    state_dict = unflatten_nf4_experts(state_dict)
    adapter_suffixes = (".lora_a.weight", ".lora_b.weight", ".magnitude", *EXPERT_ADAPTERS)
    merged = {
        k: dequantize(v, dtype) if is_nf4(v) or (dtype is not None and v.is_floating_point()) else v
        for k, v in state_dict.items()
        if not k.endswith(adapter_suffixes)
    }
    for key, lora_a in state_dict.items():
        if not key.endswith(".lora_a.weight"):
            continue
        prefix = key[: -len(".lora_a.weight")]
        b_key, w_key = f"{prefix}.lora_b.weight", f"{prefix}.weight"
        for needed in (b_key, w_key):
            if needed not in state_dict:
                raise ValueError(f"Cannot merge LoRA adapter {key!r}: {needed!r} is missing")
        if lora_a.shape[0] != rank:
            raise ValueError(
                f"Cannot merge {key!r}: its rank is {lora_a.shape[0]}, but rank={rank} was given"
            )
        weight = state_dict[w_key]
        out_dtype = dtype or weight.dtype
        delta = state_dict[b_key].float() @ lora_a.float()  # [out, r] @ [r, in] -> [out, in]
        new = dequantize(weight, torch.float32) + (alpha / rank) * delta
        magnitude = state_dict.get(f"{prefix}.magnitude")
        if magnitude is not None:
            norm = torch.linalg.norm(new, dim=1)  # [out]
            new = (magnitude.float() / norm).unsqueeze(1) * new
        merged[w_key] = new.to(out_dtype)
    _merge_experts(state_dict, merged, rank, alpha, dtype)
    orphans = [
        k for k in state_dict
        for suffix in (".lora_b.weight", ".magnitude")
        if k.endswith(suffix) and k[: -len(suffix)] + ".lora_a.weight" not in state_dict
    ]
    if orphans:
        raise ValueError(f"Cannot merge LoRA adapter {orphans[0]!r}: its lora_a is missing")
    return merged


def _merge_experts(
    state_dict: Dict[str, torch.Tensor],
    merged: Dict[str, torch.Tensor],
    rank: int,
    alpha: float,
    dtype: Optional[torch.dtype],
) -> None:
    """Fold stacked expert adapters into ``merged``'s expert stacks, ``W_e' = W_e + s *
    B_e @ A_e`` for each projection (``GroupedExperts``)."""
    for key, a in state_dict.items():
        if not key.endswith(EXPERT_ADAPTERS) or not key.endswith("_a"):
            continue
        prefix, _, leaf = key.rpartition(".")  # leaf: lora_<proj>_a
        b_key, w_key = f"{prefix}.{leaf[:-1]}b", f"{prefix}.{leaf[5:-2]}_proj"
        for needed in (b_key, w_key):
            if needed not in state_dict:
                raise ValueError(f"Cannot merge LoRA adapter {key!r}: {needed!r} is missing")
        if a.shape[1] != rank:
            raise ValueError(f"Cannot merge {key!r}: its rank is {a.shape[1]}, but rank={rank} was given")
        weight = state_dict[w_key]
        delta = state_dict[b_key].float() @ a.float()  # [E, out, r] @ [E, r, in]
        merged[w_key] = (weight.float() + (alpha / rank) * delta).to(dtype or weight.dtype)
    orphans = [k for k in state_dict if k.endswith(EXPERT_ADAPTERS) and k.endswith("_b") and k[:-1] + "a" not in state_dict]
    if orphans:
        raise ValueError(f"Cannot merge LoRA adapter {orphans[0]!r}: its lora_*_a is missing")
