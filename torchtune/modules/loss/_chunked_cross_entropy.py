"""Cross-entropy summed over target tokens, computed a chunk of the sequence at a time."""

import torch
import torch.nn.functional as F
from torch import nn

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX


class ChunkedCrossEntropyLoss(nn.Module):
    """Next-token cross-entropy, summed (not averaged) over target tokens.

    The recipe divides the sum by the number of target tokens in the whole
    gradient-accumulation window, so that batch 4 x 1 step and batch 2 x 2 steps
    train identically. Labels are not shifted by the dataset: position t predicts
    ``labels[:, t + 1]``.

    Logits are upcast to fp32 one sequence chunk at a time: with bf16 logits of
    shape [b, s, v] a full fp32 copy would be the largest tensor of the step.

    Args:
        num_output_chunks (int): number of chunks along the sequence.
        ignore_index (int): label value that contributes no loss.
    """

    def __init__(self, num_output_chunks: int = 8, ignore_index: int = CROSS_ENTROPY_IGNORE_IDX):
        super().__init__()
        if num_output_chunks < 1:
            raise UserValueError(f"num_output_chunks must be >= 1, got {num_output_chunks}")
        self.num_output_chunks = num_output_chunks
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            logits (torch.Tensor): [b, s, v] model output.
            labels (torch.Tensor): [b, s] unshifted labels.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: summed loss (fp32 scalar) and the number
            of target tokens (long scalar).
        """
        logits = logits[:, :-1]  # [b, s-1, v]: position t predicts token t+1
        targets = labels[:, 1:]  # [b, s-1]
        total = logits.new_zeros((), dtype=torch.float32)
        for logit_chunk, target_chunk in zip(
            logits.chunk(self.num_output_chunks, dim=1),
            targets.chunk(self.num_output_chunks, dim=1),
        ):
            total = total + F.cross_entropy(
                logit_chunk.reshape(-1, logit_chunk.size(-1)).float(),
                target_chunk.reshape(-1),
                ignore_index=self.ignore_index,
                reduction="sum",
            )
        num_tokens = (targets != self.ignore_index).sum()
        return total, num_tokens
