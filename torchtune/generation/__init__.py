"""Token generation: sampling and KV-cached autoregressive decoding."""

from torchtune.generation._generation import generate, sample

__all__ = ["generate", "sample"]
