"""Model families. Each subpackage holds component builders, model builders at published
sizes, a tokenizer builder and the key maps to external checkpoint layouts."""

from torchtune.models import llama2

__all__ = ["llama2"]
