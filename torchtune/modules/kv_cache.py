"""Key/value cache for incremental decoding."""

import torch
from torch import nn


class KVCache(nn.Module):
    """Pre-allocated keys and values of one attention layer, written at given positions.

    Args:
        batch_size (int): b.
        max_seq_len (int): number of slots per row.
        num_kv_heads (int): n_kv.
        head_dim (int): h_d.
        dtype (torch.dtype): dtype of the cache.
        device (torch.device, optional): device of the cache.
    """

    def __init__(
        self,
        batch_size: int,
        max_seq_len: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device = None,
    ) -> None:
        super().__init__()
        shape = (batch_size, num_kv_heads, max_seq_len, head_dim)
        # Non-persistent: a model with caches has the same state dict as one without.
        for name in ("k_cache", "v_cache"):
            buf = torch.zeros(shape, dtype=dtype, device=device)
            self.register_buffer(name, buf, persistent=False)
        self.batch_size = batch_size
        self.max_seq_len = max_seq_len

    def reset(self) -> None:
        """Zero both caches."""
        self.k_cache.zero_()
        self.v_cache.zero_()

    def update(
        self, input_pos: torch.Tensor, k_val: torch.Tensor, v_val: torch.Tensor
    ) -> tuple:
        """Write ``k_val``/``v_val`` at slots ``input_pos`` and return the whole caches.

        Args:
            input_pos (torch.Tensor): [b, s] (or [s]) slots to write.
            k_val (torch.Tensor): [b, n_kv, s, h_d].
            v_val (torch.Tensor): [b, n_kv, s, h_d].

        Returns:
            tuple: (k_cache, v_cache), each [b, n_kv, max_seq_len, h_d].

        Raises:
            ValueError: if the batch size differs from the one the cache was built for.
        """
        b, n_kv, s, h_d = k_val.shape
        if b != self.batch_size:
            raise ValueError(
                f"KVCache was set up for batch size {self.batch_size}, got a batch of {b}"
            )
        index = input_pos.expand(b, s)[:, None, :, None].expand(b, n_kv, s, h_d)
        self.k_cache.scatter_(2, index, k_val.to(self.k_cache.dtype))
        self.v_cache.scatter_(2, index, v_val.to(self.v_cache.dtype))
        return self.k_cache, self.v_cache
