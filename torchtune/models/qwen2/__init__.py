"""Qwen 2: the Llama decoder with q/k/v biases, RoPE base 1e6 and an optional tied output."""

from torchtune.models.qwen2._component_builders import lora_qwen2, qwen2

__all__ = ["lora_qwen2", "qwen2"]
