"""Model families. Each subpackage holds component builders, model builders at published
sizes, a tokenizer builder and the key maps to external checkpoint layouts: ``llama2``,
``code_llama2``, ``llama3``, ``llama3_1``, ``llama3_2``, ``llama3_3``, ``qwen2``, ``qwen2_5``,
``qwen3``.
Only ``llama2`` is imported here; the others load their tokenizer libraries (tiktoken,
tokenizers) when imported, so they are imported on use."""

from torchtune.models import llama2

__all__ = ["llama2"]
