"""Layers that models are built from (see docs/design.md for the parameter names)."""

from torchtune.modules._activation_checkpointing import set_activation_checkpointing
from torchtune.modules.attention import MultiHeadAttention
from torchtune.modules.feed_forward import FeedForward
from torchtune.modules.kv_cache import KVCache
from torchtune.modules.position_embeddings import (
    LinearRopeScaling,
    Llama3RopeScaling,
    rope_frequencies,
    RopeScaling,
    RotaryPositionalEmbeddings,
    YarnRopeScaling,
)
from torchtune.modules.rms_norm import RMSNorm
from torchtune.modules.transformer import TiedLinear, TransformerDecoder, TransformerDecoderLayer

__all__ = [
    "FeedForward",
    "KVCache",
    "LinearRopeScaling",
    "Llama3RopeScaling",
    "RopeScaling",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryPositionalEmbeddings",
    "TiedLinear",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "YarnRopeScaling",
    "rope_frequencies",
    "set_activation_checkpointing",
]
