"""Tokenizer backends, the protocol datasets rely on, and truncated encoding."""

from torchtune.tokenizers._hf_tokenizer import HuggingFaceBaseTokenizer
from torchtune.tokenizers._sentencepiece import SentencePieceTokenizer
from torchtune.tokenizers._tiktoken import TikTokenBaseTokenizer
from torchtune.tokenizers._truncated import encode_truncated
from torchtune.tokenizers._types import Tokenizer

__all__ = [
    "HuggingFaceBaseTokenizer",
    "SentencePieceTokenizer",
    "TikTokenBaseTokenizer",
    "Tokenizer",
    "encode_truncated",
]
