"""Layers that models are built from (see docs/design.md for the parameter names)."""

from torchtune.modules._activation_checkpointing import set_activation_checkpointing
from torchtune.modules.attention import MultiHeadAttention
from torchtune.modules.feed_forward import FeedForward
from torchtune.modules.kv_cache import KVCache
from torchtune.modules.position_embeddings import Llama3RopeScaling, RotaryPositionalEmbeddings
from torchtune.modules.rms_norm import RMSNorm
from torchtune.modules.transformer import TiedLinear, TransformerDecoder, TransformerDecoderLayer

__all__ = [
    "FeedForward",
    "KVCache",
    "Llama3RopeScaling",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryPositionalEmbeddings",
    "TiedLinear",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "set_activation_checkpointing",
]
