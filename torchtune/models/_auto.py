"""A model from its own folder: ``config.json`` read into a ``DecoderDescription``.

Every architecture the library implements is a row of ``ARCHITECTURES``: how its
``config.json`` fields become a description (sizes, RoPE, biases, norms, tying, windows),
what transformers assumes when a field is absent (``save_pretrained`` writes only the
fields that differ from these), and which checkpoint key map reads its weights. Every field
of the file is either read, or known not to change the math (``_NOT_MATH``); any other
field, or a value the decoder does not implement, is refused in one line naming it: a
field that changes the math is never ignored.

``auto_model(path)`` and ``lora_auto_model(path, ...)`` build the model;
``FullModelHFCheckpointer`` with no ``model_type`` reads the weights of the same folder
(``checkpoint_model_type``), and compares every model it loads into, named builders
included, with this description (``torchtune.training.check_attention_layout``).
"""

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torchtune._errors import UserFileNotFoundError, UserValueError
from torchtune.models._decoder import build_decoder, LoRASettings, lora_module_names
from torchtune.models._gemma_description import gemma_description, pattern_layer_types
from torchtune.models._description import (
    AttentionDescription,
    DecoderDescription,
    LayerDescription,
    MLPDescription,
    NormDescription,
    RopeDescription,
)
from torchtune.modules import TransformerDecoder
from torchtune.modules._rope_config import rope_from_hf_config

# Fields of a config.json that do not change what the model computes: bookkeeping,
# generation and tokenizer ids, initialisation, and switches of transformers' own code.
_NOT_MATH = frozenset({
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype",
    "dtype", "use_cache", "initializer_range", "bos_token_id", "eos_token_id",
    "pad_token_id", "output_attentions", "output_hidden_states", "return_dict",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id",
    "problem_type", "tokenizer_class", "pretraining_tp", "attention_dropout",
    "max_position_embeddings", "transformers.js_config", "is_llama_config",
    "keys_to_ignore_at_inference", "tie_encoder_decoder", "prefix", "task_specific_params",
    "finetuning_task", "torchscript", "use_return_dict", "sep_token_id",
    "decoder_start_token_id", "bad_words_ids", "num_beams", "max_length", "_model_name_or_path",
})  # and every "*_token_id": an id is never math
# Read by rope_from_hf_config.
_ROPE_FIELDS = frozenset({"rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor"})


@dataclass(frozen=True)
class Architecture:
    """How one transformers architecture becomes a description.

    Attributes:
        name (str): the ``architectures`` entry (``"LlamaForCausalLM"``).
        model_types (Tuple[str, ...]): config.json ``model_type`` values it is written with.
        defaults (Mapping[str, Any]): what transformers' config class assumes for an absent
            field (checked against transformers in the tests).
        fields (frozenset): the fields this row reads, besides the common ones.
        biases (Callable[[Mapping[str, Any]], Tuple[bool, bool, bool, bool]]): q, k, v, o
            biases from the config.
        qk_norm (bool): per-head RMSNorm on queries and keys (Qwen 3).
        checkpoint_model_type (Callable[[bool], str]): the checkpointer ``model_type``
            whose key maps read this architecture's weights, given whether it is tied.
        windows (Optional[Callable]): each layer's sliding window from the config; None:
            Qwen's rule (``use_sliding_window``, ``max_window_layers``, ``layer_types``)
            where the row reads those fields, else no window.
        partial_rotary (bool): its key maps carry ``partial_rotary_factor`` through the q/k
            row permutation (Phi-3's, for Phi-4-mini); other rows refuse it.
        reader (Optional[Callable]): reads the whole description, for a family whose
            config.json is not Llama's with options (Gemma's); None: the Llama reader.
    """

    name: str
    model_types: Tuple[str, ...]
    defaults: Mapping[str, Any]
    fields: frozenset
    biases: Callable[[Mapping[str, Any]], Tuple[bool, bool, bool, bool]]
    qk_norm: bool
    checkpoint_model_type: Callable[[bool], str]
    windows: Optional[Callable[[Mapping[str, Any], "Architecture", int, str], List[Optional[int]]]] = None
    partial_rotary: bool = False
    reader: Optional[Callable[..., DecoderDescription]] = None


_COMMON_FIELDS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps",
    "tie_word_embeddings",
}) | _ROPE_FIELDS

_WINDOW_FIELDS = frozenset({"use_sliding_window", "sliding_window", "max_window_layers", "layer_types"})


def _all_attention_biases(config: Mapping[str, Any]) -> Tuple[bool, bool, bool, bool]:
    bias = bool(config["attention_bias"])
    return bias, bias, bias, bias


def _every_layer_window(config: Mapping[str, Any], arch: Architecture, num_layers: int, where: str) -> List[Optional[int]]:
    """Mistral's rule: ``sliding_window`` on every layer; absent means transformers'
    default (4096), an explicit null means none."""
    window = config["sliding_window"] if "sliding_window" in config else arch.defaults["sliding_window"]
    if window is not None and (not isinstance(window, int) or isinstance(window, bool) or window <= 0):
        raise UserValueError(f"{where}: sliding_window must be a positive integer or null, got {window!r}")
    return [window] * num_layers



_GELU_TANH = "gelu_pytorch_tanh"


def _gemma_reader(generation: int) -> Callable[..., DecoderDescription]:
    """The config.json reader of Gemma (1), Gemma 2 or Gemma 3's text decoder, as
    transformers' ``Gemma*Config`` and modelling code read it."""

    def read(config: Mapping[str, Any], arch: "Architecture", where: str, max_seq_len: Optional[int]) -> DecoderDescription:
        get = _getter(config, arch, where)

        def nullable(key: str) -> Optional[float]:  # absent: the default; null: none
            value = config[key] if key in config else arch.defaults[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
                raise UserValueError(f"{where}: {key!r} must be a positive number or null, got {value!r}")
            return value

        # Gemma's modelling code reads hidden_act ("gelu" there is a legacy name of the tanh
        # approximation); Gemma 2 and 3 read hidden_activation, and ignore hidden_act.
        act_key = "hidden_act" if generation == 1 else "hidden_activation"
        act = get(act_key, str)
        if act not in ((_GELU_TANH, "gelu") if generation == 1 else (_GELU_TANH,)):
            raise UserValueError(f"{where}: {act_key} {act!r} is not implemented for {arch.name}; supported: [{_GELU_TANH!r}]")
        for key in ("use_bidirectional_attention", "attention_bias"):
            if config.get(key):
                raise UserValueError(f"{where}: {key} true is not implemented for {arch.name}; supported: false")
        num_layers = get("num_hidden_layers")
        d = get("hidden_size")
        head_dim = get("head_dim")
        settings = dict(
            vocab_size=get("vocab_size"), num_layers=num_layers,
            num_heads=get("num_attention_heads"), head_dim=head_dim,
            num_kv_heads=get("num_key_value_heads"), embed_dim=d,
            intermediate_dim=get("intermediate_size"),
            max_seq_len=max_seq_len or get("max_position_embeddings"), attn_dropout=0.0,
            norm_eps=get("rms_norm_eps", float),
            tie_word_embeddings=get("tie_word_embeddings", bool),
        )
        if "partial_rotary_factor" in config and config["partial_rotary_factor"] != 1.0:
            raise UserValueError(f"{where}: partial_rotary_factor is not implemented for {arch.name}; supported: 1.0")
        if generation == 1:
            rope = rope_from_hf_config({**config, "head_dim": head_dim})
            description = gemma_description(**settings, rope_base=rope.base)
            return _with_rope_scaling(description, rope.scaling)
        types = config.get("layer_types")
        if types is None:
            pattern = config.get("sliding_window_pattern", config.get("_sliding_window_pattern", 2 if generation == 2 else 6))
            types = pattern_layer_types(num_layers, pattern)
        if generation == 3 and config.get("attn_logit_softcapping") is not None:
            # transformers' Gemma 3 attention never applies it: refused, not guessed.
            raise UserValueError(f"{where}: attn_logit_softcapping is not implemented for {arch.name}; supported: null")
        full, local = _gemma_ropes(config, head_dim, where) if generation == 3 else (rope_from_hf_config({**config, "head_dim": head_dim}),) * 2
        if local.scaling is not None:
            raise UserValueError(f"{where}: RoPE scaling of the sliding layers is not implemented; supported: none")
        description = gemma_description(
            **settings, rope_base=full.base, local_rope_base=local.base, sandwich_norms=True,
            layer_types=types, sliding_window=get("sliding_window"),
            query_pre_attn_scalar=get("query_pre_attn_scalar", float),
            attn_softcap=nullable("attn_logit_softcapping") if generation == 2 else None,
            final_softcap=nullable("final_logit_softcapping"), qk_norm=generation == 3,
        )
        return _with_rope_scaling(description, full.scaling, only_full=True)

    return read


def _gemma_ropes(config: Mapping[str, Any], head_dim: int, where: str) -> Tuple[Any, Any]:
    """Gemma 3's two RoPE settings (global, sliding): transformers 5 writes
    ``rope_parameters`` per layer type; the Hub files ``rope_theta``, ``rope_scaling`` and
    ``rope_local_base_freq``."""
    params = config.get("rope_parameters")
    if isinstance(params, Mapping) and any(isinstance(v, Mapping) for v in params.values()):
        unknown = sorted(set(params) - {"full_attention", "sliding_attention"})
        if unknown:
            raise UserValueError(f"{where}: rope_parameters for {unknown} are not supported")
        full = {"rope_theta": 1_000_000.0, **(params.get("full_attention") or {})}
        local = {"rope_theta": 10_000.0, **(params.get("sliding_attention") or {})}
    else:
        full = dict(params or {}, **(config.get("rope_scaling") or {}))
        full.setdefault("rope_theta", config.get("rope_theta", 1_000_000.0))
        local = {"rope_theta": config.get("rope_local_base_freq", 10_000.0)}
    return tuple(
        rope_from_hf_config({"head_dim": head_dim, "rope_parameters": p}) for p in (full, local)
    )


def _with_rope_scaling(description: DecoderDescription, scaling: Any, only_full: bool = False) -> DecoderDescription:
    """``description`` with ``scaling`` on every layer's RoPE (only the full-attention ones)."""
    if scaling is None:
        return description
    layers = tuple(
        layer if only_full and layer.attention.sliding_window is not None else dataclasses.replace(
            layer, attention=dataclasses.replace(
                layer.attention, rope=dataclasses.replace(layer.attention.rope, scaling=scaling)))
        for layer in description.layers
    )
    return dataclasses.replace(description, layers=layers)



def _moe_reader(config: Mapping[str, Any], arch: "Architecture", where: str, max_seq_len: Optional[int]) -> DecoderDescription:
    """A Llama-style decoder whose MLPs are mixtures of experts (Qwen 3 MoE, Mixtral), as
    transformers lays them out: ``decoder_sparse_step`` / ``mlp_only_layers`` say which
    layers are mixtures (Mixtral: all)."""
    if config.get("router_jitter_noise"):
        raise UserValueError(f"{where}: router_jitter_noise is not implemented for {arch.name}; supported: 0.0")
    dense = _llama_reader(config, arch, where, max_seq_len)
    get = _getter(config, arch, where)
    num_experts = config.get("num_experts") or config.get("num_local_experts") or arch.defaults["num_experts"]
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < 1:
        raise UserValueError(f"{where}: 'num_experts' must be a positive integer, got {num_experts!r}")
    moe = MLPDescription(
        hidden_dim=get("moe_intermediate_size") if "moe_intermediate_size" in arch.defaults else get("intermediate_size"),
        num_experts=num_experts,
        experts_per_token=get("num_experts_per_tok"),
        norm_topk_prob=get("norm_topk_prob", bool) if "norm_topk_prob" in arch.defaults else True,
    )
    step = get("decoder_sparse_step", int, default=1)
    dense_only = config.get("mlp_only_layers") or []
    layers = tuple(
        dataclasses.replace(layer, mlp=moe) if i not in dense_only and (i + 1) % step == 0 else layer
        for i, layer in enumerate(dense.layers)
    )
    coef = config.get("router_aux_loss_coef", arch.defaults.get("router_aux_loss_coef", 0.0))
    return dataclasses.replace(dense, layers=layers, router_aux_loss_coef=float(coef))


_GEMMA_FIELDS = frozenset({"hidden_activation", "attention_bias", "use_bidirectional_attention"})
_GEMMA2_FIELDS = _GEMMA_FIELDS | {
    "query_pre_attn_scalar", "sliding_window", "layer_types", "final_logit_softcapping",
    "attn_logit_softcapping", "cache_implementation", "sliding_window_pattern",
    "_sliding_window_pattern",
}
_GEMMA_DEFAULTS = {
    "vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
    "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
    "head_dim": 256, "hidden_act": _GELU_TANH, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "rope_theta": 10000.0,
    "attention_bias": False,
}
_GEMMA2_DEFAULTS = {
    **{k: v for k, v in _GEMMA_DEFAULTS.items() if k != "hidden_act"},
    "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
    "num_attention_heads": 8, "num_key_value_heads": 4, "hidden_activation": _GELU_TANH,
    "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": 30.0,
    "attn_logit_softcapping": 50.0,
}
_GEMMA3_DEFAULTS = {
    **{k: v for k, v in _GEMMA2_DEFAULTS.items() if k != "rope_theta"},
    "vocab_size": 262208, "max_position_embeddings": 131072,
    "final_logit_softcapping": None, "attn_logit_softcapping": None,
}

ARCHITECTURES: Dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            name="LlamaForCausalLM",
            model_types=("llama",),
            defaults={
                "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
                "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
                "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False, "rope_theta": 10000.0, "attention_bias": False,
                "mlp_bias": False,
            },
            fields=frozenset({"attention_bias", "mlp_bias", "rope_interleaved"}),
            biases=_all_attention_biases,
            qk_norm=False,
            checkpoint_model_type=lambda tied: "LLAMA3_2" if tied else "LLAMA3",
        ),
        Architecture(
            name="Qwen2ForCausalLM",
            model_types=("qwen2",),
            defaults={
                "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
                "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False, "rope_theta": 10000.0,
                "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28,
            },
            fields=_WINDOW_FIELDS | {"use_mrope"},
            biases=lambda config: (True, True, True, False),
            qk_norm=False,
            checkpoint_model_type=lambda tied: "QWEN2",
        ),
        Architecture(
            name="Qwen3ForCausalLM",
            model_types=("qwen3",),
            defaults={
                "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
                "num_hidden_layers": 32, "num_attention_heads": 32, "head_dim": 128,
                "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False, "rope_theta": 10000.0, "attention_bias": False,
                "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28,
            },
            fields=_WINDOW_FIELDS | {"attention_bias"},
            biases=_all_attention_biases,
            qk_norm=True,
            checkpoint_model_type=lambda tied: "QWEN3",
        ),
        Architecture(
            name="MistralForCausalLM",
            model_types=("mistral",),
            defaults={
                "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "hidden_act": "silu", "max_position_embeddings": 4096 * 32,
                "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0,
                "sliding_window": 4096,
            },
            fields=frozenset({"sliding_window"}),
            biases=lambda config: (False, False, False, False),
            qk_norm=False,
            checkpoint_model_type=lambda tied: "MISTRAL",
            windows=_every_layer_window,
        ),
        Architecture(
            name="Phi3ForCausalLM",
            model_types=("phi3",),
            defaults={
                "vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
                "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
                "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": False, "rope_theta": 10000.0, "sliding_window": None,
            },
            # resid_pdrop / embd_pdrop: dropout while training, as attention_dropout.
            fields=frozenset({"sliding_window", "resid_pdrop", "embd_pdrop", "original_max_position_embeddings"}),
            biases=lambda config: (False, False, False, False),
            qk_norm=False,
            checkpoint_model_type=lambda tied: "PHI3_MINI",
            windows=_every_layer_window,
            partial_rotary=True,
        ),
        Architecture(
            name="GemmaForCausalLM",
            model_types=("gemma",),
            defaults=_GEMMA_DEFAULTS,
            fields=_GEMMA_FIELDS,
            biases=_all_attention_biases,
            qk_norm=False,
            checkpoint_model_type=lambda tied: "GEMMA",
            reader=_gemma_reader(1),
        ),
        Architecture(
            name="Gemma2ForCausalLM",
            model_types=("gemma2",),
            defaults=_GEMMA2_DEFAULTS,
            fields=_GEMMA2_FIELDS,
            biases=_all_attention_biases,
            qk_norm=False,
            checkpoint_model_type=lambda tied: "GEMMA2",
            reader=_gemma_reader(2),
        ),
        Architecture(
            name="Gemma3ForCausalLM",
            model_types=("gemma3_text", "gemma3"),
            defaults=_GEMMA3_DEFAULTS,
            fields=_GEMMA2_FIELDS | {"rope_local_base_freq"},
            biases=_all_attention_biases,
            qk_norm=True,
            checkpoint_model_type=lambda tied: "GEMMA3",
            reader=_gemma_reader(3),
        ),
        Architecture(
            name="Qwen3MoeForCausalLM",
            model_types=("qwen3_moe",),
            defaults={
                "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
                "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 4,
                "hidden_act": "silu", "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False, "rope_theta": 10000.0, "attention_bias": False,
                "use_sliding_window": False, "sliding_window": 4096,
                "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
                "norm_topk_prob": False, "decoder_sparse_step": 1, "router_aux_loss_coef": 0.001,
            },
            fields=_WINDOW_FIELDS | {
                "attention_bias", "moe_intermediate_size", "num_experts", "num_local_experts",
                "num_experts_per_tok", "norm_topk_prob", "decoder_sparse_step", "mlp_only_layers",
                "router_aux_loss_coef", "output_router_logits",
            },
            biases=_all_attention_biases,
            qk_norm=True,
            checkpoint_model_type=lambda tied: "QWEN3_MOE",
            reader=_moe_reader,
        ),
        Architecture(
            name="MixtralForCausalLM",
            model_types=("mixtral",),
            defaults={
                "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "hidden_act": "silu", "max_position_embeddings": 4096 * 32, "rms_norm_eps": 1e-5,
                "tie_word_embeddings": False, "rope_theta": 1000000.0, "sliding_window": None,
                "num_local_experts": 8, "num_experts": 8, "num_experts_per_tok": 2,
                "router_aux_loss_coef": 0.001,
            },
            fields=frozenset({
                "sliding_window", "num_local_experts", "num_experts", "num_experts_per_tok",
                "router_aux_loss_coef", "output_router_logits", "router_jitter_noise",
            }),
            biases=lambda config: (False, False, False, False),
            qk_norm=False,
            checkpoint_model_type=lambda tied: "MIXTRAL",
            windows=_every_layer_window,
            reader=_moe_reader,
        ),
    )
}

_SILU = ("silu", "swish")


# Multimodal checkpoints whose text decoder torchtune fine-tunes (the HF checkpointer
# carries their other tensors through unchanged): the wrapper -> its decoder's row.
TEXT_DECODER_OF = {"Gemma3ForConditionalGeneration": "Gemma3ForCausalLM"}


def text_decoder_config(config: Mapping[str, Any], where: str = "config.json") -> Mapping[str, Any]:
    """``config`` itself, or for a multimodal wrapper (``TEXT_DECODER_OF``) its
    ``text_config`` as a config.json of the text decoder: the fields the Hub files leave at
    transformers' defaults filled in, ``architectures`` the decoder's.

    Raises:
        UserValueError: a wrapper without a ``text_config`` object.
    """
    names = config.get("architectures") or []
    wrapper = next((n for n in names if n in TEXT_DECODER_OF), None)
    if wrapper is None:
        return config
    text = config.get("text_config")
    if not isinstance(text, Mapping):
        raise UserValueError(f"{where}: {wrapper} needs a text_config object (its text decoder)")
    arch = ARCHITECTURES[TEXT_DECODER_OF[wrapper]]
    out = {**arch.defaults, **text, "architectures": [arch.name], "model_type": arch.model_types[0]}
    if "tie_word_embeddings" in config:  # the wrapper's, which ties its lm_head
        out["tie_word_embeddings"] = config["tie_word_embeddings"]
    return out


def read_config(path: str) -> Tuple[Dict[str, Any], str]:
    """The parsed ``config.json`` of a model folder (or the file itself), and its path.

    Raises:
        UserFileNotFoundError: no config.json there.
        UserValueError: not a JSON object.
    """
    file = os.path.join(path, "config.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise UserFileNotFoundError(
            f"{file} does not exist: auto_model needs the model folder holding config.json"
        )
    try:
        with open(file, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserValueError(f"config.json {file} cannot be read as JSON: {err}") from None
    if not isinstance(config, dict):
        raise UserValueError(f"config.json {file} is not a JSON object")
    return config, file


def architecture_of(config: Mapping[str, Any], where: str) -> Architecture:
    """The row of ``ARCHITECTURES`` a config.json names (``architectures`` or, absent, its
    ``model_type``).

    Raises:
        UserValueError: an architecture the library does not implement.
    """
    names = config.get("architectures") or []
    if isinstance(names, str):
        names = [names]
    for name in names:
        # A sequence classifier (a reward or value model) is its causal LM's decoder with a
        # num_labels-wide head (``num_classes``).
        name = name.replace(_CLASSIFIER, "ForCausalLM")
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    model_type = config.get("model_type")
    if not names:
        for arch in ARCHITECTURES.values():
            if model_type in arch.model_types:
                return arch
    told = f"architectures {names}" if names else f"model_type {model_type!r}"
    raise UserValueError(
        f"{where}: {told} is not an architecture torchtune implements; supported: "
        f"{sorted([*ARCHITECTURES, *TEXT_DECODER_OF])}"
    )


def _getter(config: Mapping[str, Any], arch: Architecture, where: str) -> Callable[..., Any]:
    def get(key: str, kind: type = int, default: Any = ...) -> Any:
        value = config.get(key)
        if value is None:
            if default is not ...:
                return default
            if key not in arch.defaults:
                raise UserValueError(f"{where} lacks {key!r}, which {arch.name} needs")
            return arch.defaults[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserValueError(f"{where}: {key!r} must be a positive integer, got {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise UserValueError(f"{where}: {key!r} must be a positive number, got {value!r}")
        if kind is bool and not isinstance(value, bool):
            raise UserValueError(f"{where}: {key!r} must be true or false, got {value!r}")
        return value

    return get


def _windows(config: Mapping[str, Any], arch: Architecture, num_layers: int, where: str) -> List[Optional[int]]:
    """Each layer's sliding window (None: full attention), as transformers derives it."""
    if arch.windows is not None:
        return arch.windows(config, arch, num_layers, where)
    if not arch.fields & _WINDOW_FIELDS:
        return [None] * num_layers
    get = _getter(config, arch, where)
    use = get("use_sliding_window", bool)
    window = get("sliding_window", int) if use else None
    types = config.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != num_layers:
            raise UserValueError(
                f"{where}: 'layer_types' must list one type per layer ({num_layers}), got {types!r}"
            )
        unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
        if unknown:
            raise UserValueError(
                f"{where}: layer_types {unknown} are not supported; supported: "
                "['full_attention', 'sliding_attention']"
            )
        if "sliding_attention" in types and window is None:
            window = get("sliding_window", int)
        return [window if t == "sliding_attention" else None for t in types]
    first = get("max_window_layers", int, default=0) if use else num_layers
    # transformers: layers from max_window_layers on use the window.
    return [window if use and i >= first else None for i in range(num_layers)]


def description_from_hf_config(
    config: Mapping[str, Any],
    where: str = "config.json",
    max_seq_len: Optional[int] = None,
    ignore_fields: Sequence[str] = (),
) -> DecoderDescription:
    """The description of the model a transformers ``config.json`` describes.

    Args:
        config (Mapping[str, Any]): the parsed file.
        where (str): how messages name the file.
        max_seq_len (Optional[int]): the longest sequence to size the RoPE table and KV
            cache for; None: the file's ``max_position_embeddings``.
        ignore_fields (Sequence[str]): fields the caller vouches do not change the math.

    Returns:
        DecoderDescription: the architecture, every layer described.

    Raises:
        UserValueError: an unknown architecture, a field torchtune does not read, or a
            value the decoder does not implement, each named.
    """
    config = text_decoder_config(config, where)
    arch = architecture_of(config, where)
    known = _NOT_MATH | _COMMON_FIELDS | arch.fields | set(ignore_fields)
    unknown = sorted(k for k in config if k not in known and not k.endswith("_token_id"))
    if unknown:
        raise UserValueError(
            f"{where}: field {unknown[0]!r} is not one torchtune reads for {arch.name}, so "
            "the model might compute something else; if it does not change the model's math, "
            f"pass ignore_fields=[{unknown[0]!r}]" + (f" (also unread: {unknown[1:]})" if unknown[1:] else "")
        )
    if arch.reader is not None:
        return arch.reader(config, arch, where, max_seq_len)
    return _llama_reader(config, arch, where, max_seq_len)


def _llama_reader(
    config: Mapping[str, Any], arch: Architecture, where: str, max_seq_len: Optional[int]
) -> DecoderDescription:
    """The description of a Llama-style config.json (every row without its own reader)."""
    get = _getter(config, arch, where)
    act = get("hidden_act", str)
    if act not in _SILU:
        raise UserValueError(
            f"{where}: hidden_act {act!r} is not implemented for {arch.name}; supported: {list(_SILU)}"
        )
    if config.get("rope_interleaved"):
        raise UserValueError(f"{where}: rope_interleaved true is not implemented; supported: false")
    if config.get("use_mrope"):
        raise UserValueError(f"{where}: use_mrope true (multimodal RoPE) is not implemented")
    q_bias, k_bias, v_bias, o_bias = arch.biases({**arch.defaults, **{k: v for k, v in config.items() if v is not None}})
    d = get("hidden_size")
    num_heads = get("num_attention_heads")
    num_kv_heads = get("num_key_value_heads", int, default=arch.defaults.get("num_key_value_heads", num_heads))
    head_dim = get("head_dim", int, default=arch.defaults.get("head_dim", d // num_heads))
    if "head_dim" not in config and "head_dim" not in arch.defaults and d % num_heads:
        raise UserValueError(f"{where}: hidden_size {d} is not divisible by num_attention_heads {num_heads}")
    num_layers = get("num_hidden_layers")
    eps = get("rms_norm_eps", float)
    # transformers' rope_theta default is 10000 for every row, as rope_from_hf_config's.
    rope = rope_from_hf_config({**config, "head_dim": head_dim})
    if rope.rotary_dim != head_dim and not arch.partial_rotary:
        # transformers' Llama and Qwen rotate whole heads; their key maps do not carry a
        # partial rotary_dim through the q/k permutation (Phi-3's do).
        raise UserValueError(
            f"{where}: partial_rotary_factor {config.get('partial_rotary_factor')} is not "
            f"implemented for {arch.name}; supported: 1.0"
        )
    rope_description = RopeDescription(
        base=rope.base,
        scaling=rope.scaling,
        rotary_dim=None if rope.rotary_dim == head_dim else rope.rotary_dim,
    )
    norm = NormDescription(eps)
    layers = tuple(
        LayerDescription(
            attention=AttentionDescription(
                num_heads=num_heads,
                num_kv_heads=num_kv_heads,
                head_dim=head_dim,
                rope=rope_description,
                q_bias=q_bias,
                k_bias=k_bias,
                v_bias=v_bias,
                o_bias=o_bias,
                q_norm=norm if arch.qk_norm else None,
                k_norm=norm if arch.qk_norm else None,
                sliding_window=window,
            ),
            mlp=MLPDescription(hidden_dim=get("intermediate_size"), bias=bool(config.get("mlp_bias"))),
            norm=norm,
        )
        for window in _windows(config, arch, num_layers, where)
    )
    return DecoderDescription(
        vocab_size=get("vocab_size"),
        embed_dim=d,
        max_seq_len=max_seq_len or get("max_position_embeddings"),
        layers=layers,
        norm=norm,
        tie_word_embeddings=get("tie_word_embeddings", bool),
        num_classes=_num_classes(config),
    )


_CLASSIFIER = "ForSequenceClassification"


def _num_classes(config: Mapping[str, Any]) -> Optional[int]:
    """A sequence classifier's ``num_labels`` (transformers writes ``id2label``; 2 when
    absent, its default), else None."""
    if not any(_CLASSIFIER in name for name in config.get("architectures") or []):
        return None
    return len(config.get("id2label") or {}) or int(config.get("num_labels", 2))


def checkpoint_model_type(config: Mapping[str, Any], where: str = "config.json") -> str:
    """The checkpointer ``model_type`` whose key maps read this config's weights."""
    config = text_decoder_config(config, where)
    arch = architecture_of(config, where)
    if _num_classes(config) is not None:
        return "REWARD"
    tied = config.get("tie_word_embeddings", arch.defaults["tie_word_embeddings"])
    return arch.checkpoint_model_type(bool(tied))


def auto_model(
    path: str, max_seq_len: Optional[int] = None, ignore_fields: Sequence[str] = ()
) -> TransformerDecoder:
    """Build the model a folder's ``config.json`` describes (weights not loaded: the HF
    checkpointer reads them from the same folder).

    Args:
        path (str): the model folder (or its config.json).
        max_seq_len (Optional[int]): longest sequence to prepare for (RoPE table, KV
            cache); None: the file's ``max_position_embeddings``. It does not change the
            math.
        ignore_fields (Sequence[str]): config.json fields you vouch do not change the math.

    Returns:
        TransformerDecoder: the model, on the current default device and dtype.

    Raises:
        UserValueError: an architecture or field value torchtune does not implement.

    Example:
        >>> model = auto_model("/models/SmolLM2-135M-Instruct", max_seq_len=2048)
    """
    config, file = read_config(path)
    return build_decoder(
        description_from_hf_config(config, f"config.json {file}", max_seq_len, ignore_fields)
    )


def lora_auto_model(
    path: str,
    lora_attn_modules: List[str],
    apply_lora_to_mlp: bool = False,
    apply_lora_to_output: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16,
    lora_dropout: float = 0.0,
    quantize_base: bool = False,
    use_dora: bool = False,
    max_seq_len: Optional[int] = None,
    ignore_fields: Sequence[str] = (),
    apply_lora_to_router: bool = True,
) -> TransformerDecoder:
    """``auto_model`` with LoRA adapters (QLoRA with ``quantize_base``, DoRA with
    ``use_dora``).

    Args:
        path, max_seq_len, ignore_fields: as in ``auto_model``.
        lora_attn_modules, apply_lora_to_mlp, apply_lora_to_output, lora_rank, lora_alpha,
        lora_dropout, quantize_base, use_dora: as in ``torchtune.models.llama2.lora_llama2``.
        apply_lora_to_router (bool): adapt each mixture-of-experts layer's router (a dense
            model has none); ``apply_lora_to_mlp`` adapts a mixture's experts.

    Returns:
        TransformerDecoder: the LoRA model.

    Raises:
        UserValueError: as ``auto_model``; an unknown LoRA module name; an adapter on a
            tied output projection.
    """
    config, file = read_config(path)
    description = description_from_hf_config(config, f"config.json {file}", max_seq_len, ignore_fields)
    lora = LoRASettings(
        modules=lora_module_names(
            list(lora_attn_modules), apply_lora_to_mlp, apply_lora_to_output, apply_lora_to_router
        ),
        rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout, use_dora=use_dora,
        quantize_base=quantize_base,
    )
    return build_decoder(description, lora)
