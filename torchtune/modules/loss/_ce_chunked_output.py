"""torchtune 0.6.1's loss name, ``CEWithChunkedOutputLoss``, for its configs and scripts.

0.6.1 configs name ``torchtune.modules.loss.CEWithChunkedOutputLoss``. In this library's
recipes it is the same loss as :class:`ChunkedCrossEntropyLoss` (called with full logits,
returns the sum and the target count; the recipe normalises over the accumulation window).
A script written against 0.6.1 calls it the old way, with the list of logit chunks the
0.6.1 model returned and labels already shifted, and gets 0.6.1's mean back.
"""

from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from torchtune.data import CROSS_ENTROPY_IGNORE_IDX
from torchtune.modules.loss._chunked_cross_entropy import ChunkedCrossEntropyLoss


class CEWithChunkedOutputLoss(nn.Module):
    """Chunked cross-entropy under its 0.6.1 name; see the module docstring.

    Args:
        num_output_chunks (int): number of chunks along the sequence.
        ignore_index (int): label value that contributes no loss.
    """

    def __init__(self, num_output_chunks: int = 8, ignore_index: int = CROSS_ENTROPY_IGNORE_IDX):
        super().__init__()
        self.num_output_chunks = num_output_chunks
        self.ignore_index = ignore_index
        self._chunked = ChunkedCrossEntropyLoss(num_output_chunks, ignore_index)

    def forward(
        self, logits: Union[torch.Tensor, Sequence[torch.Tensor]], labels: torch.Tensor
    ) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            logits (Union[torch.Tensor, Sequence[torch.Tensor]]): ``[b, s, v]`` full logits
                (this library's recipes), or 0.6.1's list of ``[b, s / n, v]`` chunks.
            labels (torch.Tensor): ``[b, s]``; unshifted with full logits, already shifted
                with chunks (as 0.6.1's recipes passed them).

        Returns:
            With full logits, the summed loss and the number of target tokens (the recipe
            contract); with chunks, the mean loss over target tokens (0.6.1's result).
        """
        if isinstance(logits, torch.Tensor):
            return self._chunked(logits, labels)
        total = sum(
            F.cross_entropy(
                chunk.reshape(-1, chunk.size(-1)).float(), target.reshape(-1),
                ignore_index=self.ignore_index, reduction="sum",
            )
            for chunk, target in zip(logits, labels.chunk(len(logits), dim=1))
        )
        return total / (labels != self.ignore_index).sum()
