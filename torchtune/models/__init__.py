"""Model families, and any model of a supported architecture from its own folder.

``auto_model`` / ``lora_auto_model`` build the model a Hugging Face folder's config.json
describes, ``auto_tokenizer`` its tokenizer and chat template. Each family subpackage holds
component builders, model builders at published sizes, a tokenizer builder and the key maps
to external checkpoint layouts: ``llama2``, ``code_llama2``, ``llama3``, ``llama3_1``,
``llama3_2``, ``llama3_3``, ``gemma``, ``gemma2``, ``gemma3``, ``mistral``, ``mixtral``,
``phi3``, ``phi4``, ``qwen2``, ``qwen2_5``, ``qwen3``, ``qwen3_moe``.
Only ``llama2`` is imported here; the others load their tokenizer libraries (tiktoken,
tokenizers) when imported, so they are imported on use, as is ``auto_tokenizer``."""

from torchtune.models import llama2
from torchtune.models._auto import auto_model, lora_auto_model

__all__ = ["auto_model", "auto_tokenizer", "llama2", "lora_auto_model"]


def __getattr__(name: str):
    # Imported on first use: it loads the tokenizers libraries.
    if name == "auto_tokenizer":
        from torchtune.tokenizers._auto_tokenizer import auto_tokenizer

        return auto_tokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
