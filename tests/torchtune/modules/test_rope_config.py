"""Reading RoPE settings from Hugging Face config.json dicts, checked against transformers."""

import pytest
import torch

from torchtune._errors import UserValueError
from torchtune.modules._rope_config import RopeSettings, rope_from_hf_config
from torchtune.modules.position_embeddings import (
    LinearRopeScaling,
    Llama3RopeScaling,
    YarnRopeScaling,
    rope_frequencies,
)

FP32_EPS = torch.finfo(torch.float32).eps

# The RoPE-related fields of published config.json files (values copied from the Hub).
LLAMA_3_1_8B = {
    "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
    "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
LLAMA_3_2_1B = {
    "hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "max_position_embeddings": 131072, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}
# Qwen2.5-7B-Instruct with the rope_scaling block its model card says to add for 128K
QWEN_2_5_7B_YARN = {
    "hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0,
    "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
}
QWEN_2_5_0_5B = {
    "hidden_size": 896, "num_attention_heads": 14, "num_key_value_heads": 2,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rope_scaling": None,
}
# lmsys/vicuna-7b-v1.5-16k: linear scaling and no rope_theta (transformers' default 10000)
VICUNA_16K = {
    "hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 4096,
    "rope_scaling": {"factor": 4.0, "type": "linear"},
}
# microsoft/phi-2: 32 of each head's 80 features rotate
PHI_2 = {
    "hidden_size": 2560, "num_attention_heads": 32, "max_position_embeddings": 2048,
    "partial_rotary_factor": 0.4, "rope_theta": 10000.0, "rope_scaling": None,
}
# as transformers v5 saves a config: everything inside rope_parameters
V5_SAVED_YARN = {
    "hidden_size": 1024, "num_attention_heads": 16, "head_dim": 128,
    "max_position_embeddings": 40960,
    "rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                        "original_max_position_embeddings": 8192, "beta_fast": None,
                        "partial_rotary_factor": 0.5, "truncate": False},
}
# DeepSeek style: no factor, the ratio of the two contexts; mscale ratio
YARN_FACTOR_FROM_CONTEXTS = {
    "hidden_size": 512, "num_attention_heads": 4, "max_position_embeddings": 163840,
    "rope_theta": 10000.0,
    "rope_scaling": {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 4096,
                     "mscale": 1.0, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1},
}
# Phi-3 habit: the pre-training context at the top level wins over the one in the dict
TOP_LEVEL_ORIGINAL_CONTEXT = {
    "hidden_size": 512, "num_attention_heads": 4, "max_position_embeddings": 65536,
    "original_max_position_embeddings": 2048, "rope_theta": 10000.0,
    "rope_scaling": {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 9999},
}

EXPECTED = [
    ("llama3.1", LLAMA_3_1_8B, RopeSettings(500000.0, Llama3RopeScaling(8.0, 1.0, 4.0, 8192), 128)),
    ("llama3.2", LLAMA_3_2_1B, RopeSettings(500000.0, Llama3RopeScaling(32.0, 1.0, 4.0, 8192), 64)),
    ("qwen2.5-yarn", QWEN_2_5_7B_YARN, RopeSettings(1e6, YarnRopeScaling(4.0, 32768), 128)),
    ("qwen2.5-none", QWEN_2_5_0_5B, RopeSettings(1e6, None, 64)),
    ("linear", VICUNA_16K, RopeSettings(10000.0, LinearRopeScaling(4.0), 128)),
    ("partial", PHI_2, RopeSettings(10000.0, None, 32)),
    ("v5-rope-parameters", V5_SAVED_YARN,
     RopeSettings(1e6, YarnRopeScaling(4.0, 8192, truncate=False), 64)),
    ("yarn-factor-from-contexts", YARN_FACTOR_FROM_CONTEXTS,
     RopeSettings(10000.0, YarnRopeScaling(40.0, 4096, mscale=1.0, mscale_all_dim=0.707), 128)),
    ("top-level-original-context", TOP_LEVEL_ORIGINAL_CONTEXT,
     RopeSettings(10000.0, YarnRopeScaling(16.0, 2048), 128)),
]


@pytest.mark.parametrize("name,config,expected", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_reads_published_configs(name, config, expected):
    assert rope_from_hf_config(config) == expected


def hf_rope(config):
    """transformers' inverse frequencies and cos/sin multiplier for a config.json dict."""
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.stablelm.modeling_stablelm import StableLmRotaryEmbedding

    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.items()})
    rope_type = hf_config.rope_parameters["rope_type"]
    if rope_type == "default":  # Llama's default ignores partial_rotary_factor; StableLM's reads it
        return StableLmRotaryEmbedding.compute_default_rope_parameters(hf_config)
    return ROPE_INIT_FUNCTIONS[rope_type](hf_config, torch.device("cpu"))


@pytest.mark.parametrize("name,config,expected", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_settings_give_transformers_frequencies_and_attention_factor(name, config, expected):
    import copy

    hf_inv_freq, hf_factor = hf_rope(copy.deepcopy(config))  # transformers edits the dict
    settings = rope_from_hf_config(config)
    ours = rope_frequencies(settings.rotary_dim, settings.base, settings.scaling)
    # fp32 on both sides, each a few ulp (<= 3 eps relative) from the exact value
    torch.testing.assert_close(ours, hf_inv_freq.float(), atol=0, rtol=6 * FP32_EPS)
    factor = 1.0 if settings.scaling is None else settings.scaling.attention_scaling
    assert factor == pytest.approx(hf_factor, rel=1e-14)


def test_type_default_and_empty_scaling_mean_none():
    base = {"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 5.0}
    for scaling in (None, {}, {"type": "default"}, {"rope_type": "default", "factor": 3.0}):
        assert rope_from_hf_config({**base, "rope_scaling": scaling}) == RopeSettings(5.0, None, 16)
    assert rope_from_hf_config({"hidden_size": 64, "num_attention_heads": 4}).base == 10000.0


@pytest.mark.parametrize("rope_type", ["dynamic", "longrope", "proportional", "su"])
def test_unimplemented_rope_types_are_refused_in_one_line(rope_type):
    config = {**LLAMA_3_1_8B, "rope_scaling": {"rope_type": rope_type, "factor": 2.0}}
    message = (
        f"config.json rope_scaling.rope_type '{rope_type}' is not supported; "
        "supported: default, linear, llama3, yarn"
    )
    with pytest.raises(UserValueError) as info:
        rope_from_hf_config(config)
    assert str(info.value) == message
    config = {"hidden_size": 64, "num_attention_heads": 4,
              "rope_parameters": {"type": rope_type, "rope_theta": 1e4}}
    with pytest.raises(UserValueError, match="rope_parameters.rope_type"):
        rope_from_hf_config(config)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"rope_scaling": {"rope_type": "linear"}}, "rope_scaling is missing 'factor'"),
        ({"rope_scaling": {"rope_type": "linear", "factor": "4"}}, "factor must be a number"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 0}}, "factor must be positive"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "truncate": "no"}},
         "truncate must be true or false"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}},
         "missing 'high_freq_factor'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                           "high_freq_factor": 1.0}}, "high_freq_factor"),
        ({"rope_parameters": {"full_attention": {"rope_type": "default"},
                              "sliding_attention": {"rope_type": "default"}}},
         "per layer type \\(full_attention, sliding_attention\\)"),
        ({"partial_rotary_factor": 0.6},
         "partial_rotary_factor \\(0.6\\) x head_dim \\(16\\) gives 9"),
        ({"partial_rotary_factor": 1.5}, "partial_rotary_factor"),
        ({"rope_theta": -1.0}, "rope_theta must be positive"),
        ({"hidden_size": None}, "missing 'hidden_size'"),
    ],
)
def test_bad_fields_are_user_errors_naming_the_field(change, match):
    config = {"hidden_size": 64, "num_attention_heads": 4, "rope_theta": 1e4,
              "max_position_embeddings": 4096, **change}
    with pytest.raises(UserValueError, match=match):
        rope_from_hf_config(config)


def test_yarn_needs_a_context_length():
    config = {"hidden_size": 64, "num_attention_heads": 4,
              "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    with pytest.raises(UserValueError, match="original_max_position_embeddings"):
        rope_from_hf_config(config)
    config["max_position_embeddings"] = 4096  # transformers' fallback
    assert rope_from_hf_config(config).scaling == YarnRopeScaling(4.0, 4096)
