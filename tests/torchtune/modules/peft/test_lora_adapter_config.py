"""get_lora_adapter_config: the adapter settings a recipe saves, read from the built model."""

import pytest
from torch import nn

from torchtune._errors import UserValueError
from torchtune.models.llama2 import llama2, lora_llama2
from torchtune.modules.peft import LoRALinear
from torchtune.modules.peft.peft_utils import get_lora_adapter_config, get_lora_module_names

SIZES = dict(vocab_size=30, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=16,
             max_seq_len=16, intermediate_dim=24)


@pytest.mark.parametrize(
    "attn, mlp, output, use_dora",
    [(["q_proj", "v_proj"], False, False, False), (["k_proj", "output_proj"], True, True, True)],
)
def test_reads_what_the_builder_was_given(attn, mlp, output, use_dora):
    model = lora_llama2(lora_attn_modules=attn, apply_lora_to_mlp=mlp, apply_lora_to_output=output,
                        lora_rank=3, lora_alpha=6.0, use_dora=use_dora, **SIZES)
    assert get_lora_adapter_config(model) == {
        "r": 3,
        "lora_alpha": 6.0,
        "target_modules": get_lora_module_names(attn, mlp, output),
        "use_dora": use_dora,
    }


def test_builder_defaults_are_read_not_restated():
    model = lora_llama2(lora_attn_modules=["v_proj"], lora_rank=2, lora_alpha=4.0, **SIZES)
    config = get_lora_adapter_config(model)
    assert (config["target_modules"], config["use_dora"]) == (["v_proj"], False)


def test_refuses_a_model_without_one_lora_setting():
    with pytest.raises(UserValueError, match="no LoRA layer"):
        get_lora_adapter_config(llama2(**SIZES))
    mixed = nn.ModuleDict({"a": LoRALinear(4, 4, rank=2, alpha=4.0), "b": LoRALinear(4, 4, rank=4, alpha=4.0)})
    with pytest.raises(UserValueError, match="differ in rank.*a: rank 2.*b: rank 4"):
        get_lora_adapter_config(mixed)
