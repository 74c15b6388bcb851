"""Losses used by the recipes."""

from torchtune.modules.loss._ce_chunked_output import CEWithChunkedOutputLoss
from torchtune.modules.loss._chunked_cross_entropy import ChunkedCrossEntropyLoss
from torchtune.modules.loss._linear_cross_entropy import LinearCrossEntropyLoss

__all__ = ["CEWithChunkedOutputLoss", "ChunkedCrossEntropyLoss", "LinearCrossEntropyLoss"]
