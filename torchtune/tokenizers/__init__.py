"""Tokenizer backends, the protocol datasets rely on, truncated encoding, and
``auto_tokenizer`` (a tokenizer and chat template from a model's own folder)."""

from torchtune.tokenizers._auto_tokenizer import auto_tokenizer, ModelFolderTokenizer
from torchtune.tokenizers._hf_tokenizer import HuggingFaceBaseTokenizer
from torchtune.tokenizers._prompt_template import resolve_prompt_template, RoleTagTemplate
from torchtune.tokenizers._sentencepiece import SentencePieceTokenizer
from torchtune.tokenizers._tiktoken import TikTokenBaseTokenizer
from torchtune.tokenizers._truncated import encode_truncated, truncate_to_max_seq_len
from torchtune.tokenizers._types import Tokenizer

__all__ = [
    "HuggingFaceBaseTokenizer",
    "ModelFolderTokenizer",
    "RoleTagTemplate",
    "SentencePieceTokenizer",
    "TikTokenBaseTokenizer",
    "Tokenizer",
    "auto_tokenizer",
    "encode_truncated",
    "resolve_prompt_template",
    "truncate_to_max_seq_len",
]
