"""torchtune 0.6.1's ``Phi3RotaryPositionalEmbeddings``: RoPE in Hugging Face's rotate-half
layout, for code that calls it on q/k laid out as the Phi-3 checkpoint lays them out.

The decoder itself never uses it: its key maps bring q/k rows to the interleaved layout of
``RotaryPositionalEmbeddings`` (see its docstring). Here the features are permuted to that
layout, rotated by the shared module and permuted back; a permutation moves values without
arithmetic, so the result is the shared rotation's, bit for bit.
"""

from typing import Optional

import torch
from torch import nn

from torchtune.modules.position_embeddings import RotaryPositionalEmbeddings


class Phi3RotaryPositionalEmbeddings(nn.Module):
    """Rotate the pairs ``(x_j, x_{j + dim/2})`` of each head by ``pos * theta_j``.

    Args:
        dim (int): per-head dimension (even).
        max_seq_len (int): number of positions to cache.
        base (int): the RoPE base.
    """

    def __init__(self, dim: int, max_seq_len: int = 4096, base: int = 10_000) -> None:
        super().__init__()
        self.dim, self.max_seq_len, self.base = dim, max_seq_len, base
        self.rope = RotaryPositionalEmbeddings(dim, max_seq_len=max_seq_len, base=base)
        half = dim // 2
        # interleaved feature 2j <- half-layout j, 2j+1 <- j + dim/2
        to_pairs = torch.tensor([i for j in range(half) for i in (j, j + half)])
        self.register_buffer("_to_pairs", to_pairs, persistent=False)
        self.register_buffer("_to_halves", torch.argsort(to_pairs), persistent=False)

    def reset_parameters(self) -> None:
        """Recompute the cache (after building on the meta device)."""
        self.rope.reset_parameters()

    def forward(self, x: torch.Tensor, input_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [b, s, n_h, h_d] queries or keys, rotate-half layout.
            input_pos (Optional[torch.Tensor]): [b, s] (or [s]) positions; None: 0 .. s-1.

        Returns:
            torch.Tensor: the rotated tensor, shape, dtype and layout of ``x``.
        """
        rotated = self.rope(x.index_select(-1, self._to_pairs), input_pos=input_pos)
        return rotated.index_select(-1, self._to_halves)
