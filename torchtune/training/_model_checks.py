"""Checking that the model a config builds is the checkpoint's model, before building it.

A model built with the wrong sizes fails only when the weights load, after the whole model
was allocated; worse, head counts that disagree with the checkpoint's config while giving
the same tensor shapes (4 heads of 16 for 8 heads of 8) load without complaint and train
with the wrong attention layout. The recipes build the model on the ``meta`` device first
(no memory, no time), compare its attention layout with the checkpoint's config.json or
params.json and its shapes with the first tensors of the checkpoint, and only then build it
for real.
"""

import itertools
from typing import Any, Callable, Dict, Iterable, Iterator, Mapping, Optional

import torch
from torch import nn

from torchtune._errors import UserValueError
from torchtune.training.checkpointing._utils import check_shapes


def attention_layout(model: nn.Module) -> Optional[Dict[str, int]]:
    """``num_heads``, ``num_kv_heads``, ``head_dim`` and ``dim`` of the model's first
    attention layer (a decoder's layers share them), or None if it has none."""
    for module in model.modules():
        if all(hasattr(module, a) for a in ("num_heads", "num_kv_heads", "head_dim", "embed_dim")):
            return {
                "num_heads": module.num_heads,
                "num_kv_heads": module.num_kv_heads,
                "head_dim": module.head_dim,
                "dim": module.embed_dim,
            }
    return None


def check_attention_layout(model: nn.Module, layout: Optional[Mapping[str, Any]]) -> None:
    """Refuse a model whose attention layout differs from the checkpoint's config.

    Args:
        model (nn.Module): the built (or meta-device) model.
        layout (Optional[Mapping[str, Any]]): ``checkpointer.model_layout``; None skips.

    Raises:
        UserValueError: naming both layouts, the file and the builder arguments to set.
    """
    ours = attention_layout(model)
    if layout is None or ours is None:
        return
    theirs = {
        "num_heads": layout["num_heads"],
        "num_kv_heads": layout["num_kv_heads"],
        "head_dim": layout.get("head_dim") or layout["dim"] // layout["num_heads"],
        "dim": layout["dim"],
    }
    if ours == theirs:
        _check_tying(model, layout)
        _check_description(model, layout)
        return

    def show(values: Mapping[str, int]) -> str:
        return ", ".join(f"{k} {values[k]}" for k in ("num_heads", "num_kv_heads", "head_dim", "dim"))

    raise UserValueError(
        f"model: the config builds attention with {show(ours)}, but {layout['source']} says "
        f"{show(theirs)}; build the model with num_heads={theirs['num_heads']}, "
        f"num_kv_heads={theirs['num_kv_heads']}, embed_dim={theirs['dim']} (or the builder of "
        "this checkpoint's size), else the weights load into the wrong attention layout"
    )


def check_model_against_checkpoint(
    model: nn.Module,
    first_tensors: Mapping[str, torch.Tensor],
    layout: Optional[Mapping[str, Any]],
) -> None:
    """The checks a recipe runs on a meta-device copy of its model before building it.

    Args:
        model (nn.Module): the model, built on the ``meta`` device.
        first_tensors (Mapping[str, torch.Tensor]): some of the checkpoint's tensors in the
            internal layout (the first group of a streamed load: embedding, final norm,
            output), compared by shape only; their data is not read.
        layout (Optional[Mapping[str, Any]]): ``checkpointer.model_layout``.

    Raises:
        UserValueError: one line naming what does not match.
    """
    check_shapes(model, first_tensors)
    check_attention_layout(model, layout)


def check_checkpoint_fits(
    build: Callable[[], nn.Module],
    groups: Iterable[Dict[str, torch.Tensor]],
    layout: Optional[Mapping[str, Any]],
) -> Iterator[Dict[str, torch.Tensor]]:
    """Build the model on the ``meta`` device and check it against the checkpoint's first
    group of tensors and its layout (``check_model_against_checkpoint``), before the model
    is built for real.

    Args:
        build (Callable[[], nn.Module]): builds the model (called under ``meta``).
        groups (Iterable[Dict[str, torch.Tensor]]): the checkpoint, whole (a list of one
            state dict) or streamed (``load_checkpoint(stream_model=True)["model"]``).
        layout (Optional[Mapping[str, Any]]): ``checkpointer.model_layout``.

    Returns:
        Iterator[Dict[str, torch.Tensor]]: ``groups`` again, the first one included; it is
        released once the next is asked for, as a streamed load expects.

    Example:
        >>> groups = check_checkpoint_fits(lambda: config.instantiate(cfg.model), groups, ckpt.model_layout)
        >>> load_state_dict_in_groups(model, groups)
    """
    groups = iter(groups)
    first = next(groups, None)
    with torch.device("meta"):
        probe = build()
    check_model_against_checkpoint(probe, first or {}, layout)
    return itertools.chain([] if first is None else [first], groups)


# Where each description field comes from in a transformers config.json.
_HF_FIELD = {
    "vocab_size": "vocab_size", "embed_dim": "hidden_size", "num_layers": "num_hidden_layers",
    "tie_word_embeddings": "tie_word_embeddings", "norm.eps": "rms_norm_eps",
    "attention.num_heads": "num_attention_heads", "attention.num_kv_heads": "num_key_value_heads",
    "attention.head_dim": "head_dim", "attention.rope.base": "rope_theta",
    "attention.rope.scaling": "rope_scaling", "attention.rope.rotary_dim": "partial_rotary_factor",
    "attention.q_bias": "attention_bias", "attention.k_bias": "attention_bias",
    "attention.v_bias": "attention_bias", "attention.o_bias": "attention_bias",
    "attention.sliding_window": "sliding_window / layer_types", "mlp.hidden_dim": "intermediate_size",
    "mlp.activation": "hidden_act", "mlp.bias": "mlp_bias",
}


def _hf_field(name: str) -> str:
    """The config.json field behind a description field name (``layers[3].norm.eps``)."""
    short = name.split("].", 1)[-1]
    return _HF_FIELD.get(short, "the architecture")


def _check_description(model: nn.Module, layout: Mapping[str, Any]) -> None:
    """Refuse a built model whose architecture differs from the one config.json describes,
    in any field that changes the math (RoPE base or scaling, biases, norms, windows, ...):
    such a model loads the weights without a complaint and computes something else."""
    from torchtune.models._description import differences

    ours = getattr(model, "description", None)
    if ours is None or "description" not in layout:
        return  # a model assembled by hand, or a checkpoint without config.json
    theirs = layout["description"]
    if theirs is None:
        raise UserValueError(
            f"{layout['description_error']} (the model is loaded from this folder, so its "
            "config.json must describe it)"
        )
    found = differences(ours, theirs)
    if not found:
        return
    name, mine, other = found[0]
    more = f" (and {len(found) - 1} more differences)" if len(found) > 1 else ""
    raise UserValueError(
        f"model: the config builds {name} = {mine!r}, but {layout['source']} says {other!r} "
        f"({_hf_field(name)}){more}; build the model from the folder "
        "(_component_: torchtune.models.auto_model, path: the checkpoint folder; the hf/* configs "
        "do) or pass the builder the checkpoint's values, else the weights load into a model "
        "that computes something else"
    )


def _is_tied(model: nn.Module) -> bool:
    # A tied output has no weight of its own: it projects with tok_embeddings.weight.
    return "output.weight" not in model.state_dict()


def _check_tying(model: nn.Module, layout: Mapping[str, Any]) -> None:
    tied = layout.get("tied")
    if tied is None or _is_tied(model) == tied:
        return
    raise UserValueError(
        f"model: the config builds {'a tied' if _is_tied(model) else 'an untied'} output "
        f"projection, but {layout['source']} says tie_word_embeddings {str(tied).lower()}; set "
        f"model.tie_word_embeddings={tied} (or leave it out: it is read from the checkpoint)"
    )


def tie_like_checkpoint(cfg_model: Any, layout: Optional[Mapping[str, Any]]) -> None:
    """Set ``tie_word_embeddings`` in the model's config node from the checkpoint when the
    builder takes it and the config leaves it out (``lora_qwen3`` defaults to untied, most
    small Qwen 3 sizes are tied): the model is then built as the checkpoint was saved.

    Args:
        cfg_model (Any): the ``model`` config node (a DictConfig), changed in place.
        layout (Optional[Mapping[str, Any]]): ``checkpointer.model_layout``.

    Raises:
        UserValueError: the config sets ``tie_word_embeddings`` against the checkpoint.
    """
    import inspect

    from torchtune.config import resolve_component

    tied = None if layout is None else layout.get("tied")
    if tied is None or "_component_" not in cfg_model:
        return
    try:
        params = inspect.signature(resolve_component(cfg_model["_component_"])).parameters
    except (TypeError, ValueError):
        return
    if "tie_word_embeddings" not in params:
        return
    if "tie_word_embeddings" in cfg_model:
        if bool(cfg_model["tie_word_embeddings"]) != tied:
            raise UserValueError(
                f"model.tie_word_embeddings is {cfg_model['tie_word_embeddings']}, but "
                f"{layout['source']} says tie_word_embeddings {str(tied).lower()}; set "
                f"model.tie_word_embeddings={tied} (or leave it out: it is read from the checkpoint)"
            )
        return
    cfg_model["tie_word_embeddings"] = tied
