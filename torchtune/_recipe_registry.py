"""The built-in recipes and the configs each can use (`tune ls`)."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    name: str  # built-in config name, e.g. "llama2/7B_lora_single_device"
    file_path: str  # relative to recipes/configs


@dataclass(frozen=True)
class Recipe:
    name: str  # e.g. "lora_finetune_single_device"
    file_path: str  # relative to recipes/
    params: str  # dotted path of the recipe's parameter dataclass
    configs: list = field(default_factory=list)
    supports_distributed: bool = False


def _configs(*names: str) -> list:
    return [Config(name=n, file_path=f"{n}.yaml") for n in names]


_RECIPES = [
    Recipe(
        name="full_finetune_single_device",
        file_path="full_finetune_single_device.py",
        params="recipes.full_finetune_single_device.FullFinetuneParams",
        configs=_configs(
            "hf/full_single_device",
            "alpaca_llama2_full_finetune",
            "llama2/7B_full_single_device",
            "mistral/7B_full_low_memory",
            "phi3/mini_full_low_memory",
            "phi4/14B_full_low_memory",
            "llama3/8B_full_single_device",
            "llama3_1/8B_full_single_device",
            "llama3_2/1B_full_single_device",
            "llama3_2/3B_full_single_device",
            "qwen2_5/0.5B_full_single_device",
            "qwen2_5/1.5B_full_single_device",
            "qwen2_5/3B_full_single_device",
            "qwen3/0.6B_full_single_device",
            "qwen3/1.7B_full_single_device",
            "qwen3/4B_full_single_device",
            "stories260K/full_single_device",
        ),
    ),
    Recipe(
        name="lora_finetune_single_device",
        file_path="lora_finetune_single_device.py",
        params="recipes.lora_finetune_single_device.LoRAFinetuneParams",
        configs=_configs(
            "hf/lora_single_device",
            "hf/qlora_single_device",
            "alpaca_llama2_lora_finetune",
            "llama2/7B_lora_single_device",
            "mistral/7B_lora_single_device",
            "phi3/mini_lora_single_device",
            "phi4/14B_lora_single_device",
            "llama2/13B_lora_single_device",
            "llama3/8B_lora_single_device",
            "llama3_1/8B_lora_single_device",
            "llama3_2/1B_lora_single_device",
            "llama3_2/3B_lora_single_device",
            "qwen2_5/0.5B_lora_single_device",
            "qwen2_5/1.5B_lora_single_device",
            "qwen2_5/3B_lora_single_device",
            "qwen2_5/7B_lora_single_device",
            "qwen2_5/14B_lora_single_device",
            "qwen3/0.6B_lora_single_device",
            "qwen3/1.7B_lora_single_device",
            "qwen3/4B_lora_single_device",
            "qwen3/8B_lora_single_device",
            "stories260K/lora_single_device",
            "llama2/7B_qlora_single_device",
            "mistral/7B_qlora_single_device",
            "phi3/mini_qlora_single_device",
            "phi4/14B_qlora_single_device",
            "llama3/8B_qdora_single_device",
            "llama3/8B_dora_single_device",
            "llama3_1/8B_qlora_single_device",
            "llama3_2/1B_qlora_single_device",
            "llama3_2/3B_qlora_single_device",
            "qwen2_5/7B_qlora_single_device",
            "qwen3/8B_qlora_single_device",
        ),
    ),
    Recipe(
        name="generate",
        file_path="generate.py",
        params="recipes.generate.GenerateParams",
        configs=_configs(
            "hf/generation",
            "generation",
            "llama2/generation",
            "code_llama2/generation",
            "llama3/generation",
            "llama3_1/generation",
            "llama3_2/generation",
            "llama3_3/generation",
            "qwen2_5/generation",
            "qwen3/generation",
            "stories260K/generation",
        ),
    ),
    Recipe(
        name="eleuther_eval",
        file_path="eleuther_eval.py",
        params="recipes.eleuther_eval.EleutherEvalParams",
        configs=_configs(
            "eleuther_evaluation",
            "mistral/evaluation",
            "phi3/evaluation",
            "phi4/evaluation",
            "stories260K/eleuther_evaluation",
        ),
    ),
    Recipe(
        name="full_finetune_distributed",
        file_path="full_finetune_distributed.py",
        params="recipes.full_finetune_distributed.FullFinetuneParams",
        configs=_configs(
            "hf/full",
            "llama2/7B_full",
            "mistral/7B_full",
            "phi3/mini_full",
            "phi4/14B_full",
            "llama3/8B_full",
            "llama3_1/8B_full",
            "llama3_2/1B_full",
            "llama3_3/70B_full",
            "qwen2_5/7B_full",
            "qwen3/8B_full",
            "stories260K/full_distributed",
        ),
        supports_distributed=True,
    ),
    Recipe(
        name="lora_finetune_distributed",
        file_path="lora_finetune_distributed.py",
        params="recipes.lora_finetune_distributed.LoRAFinetuneParams",
        configs=_configs(
            "hf/lora",
            "llama2/7B_lora",
            "mistral/7B_lora",
            "phi3/mini_lora",
            "phi4/14B_lora",
            "llama2/13B_lora",
            "llama2/70B_lora",
            "llama3/8B_lora",
            "llama3/70B_lora",
            "llama3_1/8B_lora",
            "llama3_1/70B_lora",
            "llama3_1/405B_lora",
            "llama3_2/3B_lora",
            "llama3_3/70B_lora",
            "qwen2_5/7B_lora",
            "qwen2_5/32B_lora",
            "qwen2_5/72B_lora",
            "qwen3/8B_lora",
            "qwen3/14B_lora",
            "qwen3/32B_lora",
            "stories260K/lora_distributed",
            "llama3/8B_dora",
            "llama3_3/70B_qlora",
        ),
        supports_distributed=True,
    ),
    Recipe(
        name="lora_dpo_single_device",
        file_path="lora_dpo_single_device.py",
        params="recipes.lora_dpo_single_device.LoRADPOParams",
        configs=_configs(
            "hf/lora_dpo_single_device",
            "llama2/7B_lora_dpo_single_device",
            "llama3_1/8B_lora_dpo_single_device",
            "llama3_2/1B_lora_dpo_single_device",
            "qwen2_5/1.5B_lora_dpo_single_device",
            "qwen3/1.7B_lora_dpo_single_device",
            "stories260K/lora_dpo_single_device",
        ),
    ),
    Recipe(
        name="lora_dpo_distributed",
        file_path="lora_dpo_distributed.py",
        params="recipes.lora_dpo_distributed.LoRADPOParams",
        configs=_configs(
            "llama2/7B_lora_dpo",
            "llama3_1/8B_lora_dpo",
            "qwen2_5/7B_lora_dpo",
            "qwen3/8B_lora_dpo",
            "stories260K/lora_dpo_distributed",
        ),
        supports_distributed=True,
    ),
    Recipe(
        name="full_dpo_distributed",
        file_path="full_dpo_distributed.py",
        params="recipes.full_dpo_distributed.FullDPOParams",
        configs=_configs("llama3_1/8B_full_dpo", "stories260K/full_dpo_distributed"),
        supports_distributed=True,
    ),
]


def get_all_recipes() -> list:
    """Every built-in recipe, in the order `tune ls` prints them."""
    return list(_RECIPES)
