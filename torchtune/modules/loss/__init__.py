"""Losses used by the recipes."""

from torchtune.modules.loss._chunked_cross_entropy import ChunkedCrossEntropyLoss

__all__ = ["ChunkedCrossEntropyLoss"]
