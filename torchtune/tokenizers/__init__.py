"""Tokenizer backends, the protocol datasets rely on, and truncated encoding."""

from torchtune.tokenizers._hf_tokenizer import HuggingFaceBaseTokenizer
from torchtune.tokenizers._prompt_template import resolve_prompt_template, RoleTagTemplate
from torchtune.tokenizers._sentencepiece import SentencePieceTokenizer
from torchtune.tokenizers._tiktoken import TikTokenBaseTokenizer
from torchtune.tokenizers._truncated import encode_truncated, truncate_to_max_seq_len
from torchtune.tokenizers._types import Tokenizer

__all__ = [
    "HuggingFaceBaseTokenizer",
    "RoleTagTemplate",
    "SentencePieceTokenizer",
    "TikTokenBaseTokenizer",
    "Tokenizer",
    "encode_truncated",
    "resolve_prompt_template",
    "truncate_to_max_seq_len",
]
