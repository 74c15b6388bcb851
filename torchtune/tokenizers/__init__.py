"""Tokenizer backends and the protocol datasets rely on."""

from torchtune.tokenizers._sentencepiece import SentencePieceTokenizer
from torchtune.tokenizers._types import Tokenizer

__all__ = ["SentencePieceTokenizer", "Tokenizer"]
