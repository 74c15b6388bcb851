"""Multi-head attention with grouped-query attention (GQA), an optional KV cache, and the
attention options that tell decoder families apart (scale, soft-cap, sliding window)."""

from typing import Optional

import torch
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules._attention_kernels import attend
from torchtune.modules._documents import Documents
from torchtune.modules.kv_cache import KVCache


class MultiHeadAttention(nn.Module):
    """Causal self-attention; ``_attention_kernels.attend`` picks the kernel.

    With ``num_kv_heads < num_heads`` each key/value head serves a group of
    ``num_heads // num_kv_heads`` consecutive query heads (GQA, Ainslie et al. 2023);
    ``num_kv_heads == num_heads`` is ordinary multi-head attention::

        query heads   q0 q1 | q2 q3 | q4 q5 | q6 q7
        kv heads        k0  |   k1  |   k2  |   k3      (n_h = 8, n_kv = 4)

    Args:
        embed_dim (int): d.
        num_heads (int): n_h.
        num_kv_heads (int): n_kv; must divide ``num_heads``.
        head_dim (int): h_d.
        q_proj (nn.Module): d -> n_h * h_d.
        k_proj (nn.Module): d -> n_kv * h_d.
        v_proj (nn.Module): d -> n_kv * h_d.
        output_proj (nn.Module): n_h * h_d -> d.
        pos_embeddings (nn.Module): applied to q and k, called as ``(x, input_pos)``.
        max_seq_len (int): cache length used by ``setup_cache``.
        attn_dropout (float): dropout on the attention weights while training.
        q_norm (Optional[nn.Module]): applied to the queries per head, ``[b, s, n_h, h_d]``,
            before RoPE (Qwen 3's ``RMSNorm(h_d)``); None: none. In the state dict as
            ``q_norm.scale``.
        k_norm (Optional[nn.Module]): the same for the keys, ``[b, s, n_kv, h_d]``.
        scale (Optional[float]): the factor on q.k; None means ``1 / sqrt(h_d)`` (Gemma:
            ``query_pre_attn_scalar ** -0.5``).
        softcap (Optional[float]): attention logit soft-cap: scaled scores become
            ``softcap * tanh(scores / softcap)`` before masking (Gemma 2's
            ``attn_logit_softcapping``); None: none.
        sliding_window (Optional[int]): a query at position i attends only to keys at
            ``i - sliding_window < j <= i``: ``sliding_window`` tokens, itself included
            (Hugging Face's ``sliding_window``, Mistral, Gemma). i and j are indices in the
            row: KV-cache slots with a cache, counted from each document's start with
            ``documents``; with a ``mask``, keys must also be allowed by it. None: none.

    ``head_dim`` need not be ``embed_dim // num_heads`` (Qwen 3: d 1024, 16 heads, h_d 128);
    the projections give the sizes. Biases are the projections' own (``nn.Linear(bias=True)``
    or ``LoRALinear(use_bias=True)``: ``q_proj.bias``).

    Raises:
        UserValueError: if ``num_kv_heads`` does not divide ``num_heads``, or an option is
            out of range.
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        q_proj: nn.Module,
        k_proj: nn.Module,
        v_proj: nn.Module,
        output_proj: nn.Module,
        pos_embeddings: nn.Module,
        max_seq_len: int = 4096,
        attn_dropout: float = 0.0,
        q_norm: Optional[nn.Module] = None,
        k_norm: Optional[nn.Module] = None,
        scale: Optional[float] = None,
        softcap: Optional[float] = None,
        sliding_window: Optional[int] = None,
    ) -> None:
        super().__init__()
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise UserValueError(
                f"num_kv_heads ({num_kv_heads}) must divide num_heads ({num_heads})"
            )
        if not 0.0 <= attn_dropout <= 1.0:
            raise UserValueError(f"attn_dropout ({attn_dropout}) must be in [0, 1]")
        for name, value in (("scale", scale), ("softcap", softcap)):
            if value is not None and not value > 0:
                raise UserValueError(f"{name} ({value}) must be > 0, or None for the default")
        if sliding_window is not None and (
            isinstance(sliding_window, bool) or not isinstance(sliding_window, int)
            or sliding_window < 1
        ):
            raise UserValueError(
                f"sliding_window ({sliding_window!r}) must be an int >= 1 (tokens a query "
                "sees, itself included), or None for none"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.attn_dropout = attn_dropout
        self.q_proj = q_proj
        self.k_proj = k_proj
        self.v_proj = v_proj
        self.output_proj = output_proj
        self.pos_embeddings = pos_embeddings
        self.q_norm = q_norm
        self.k_norm = k_norm
        self.scale = scale
        self.softcap = softcap
        self.sliding_window = sliding_window
        self.kv_cache: Optional[KVCache] = None

    def setup_cache(self, batch_size: int, dtype: torch.dtype) -> None:
        """Allocate a KV cache of ``max_seq_len`` slots on the device of the weights."""
        device = next(self.parameters()).device
        self.kv_cache = KVCache(
            batch_size, self.max_seq_len, self.num_kv_heads, self.head_dim, dtype, device
        )

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: Optional[torch.Tensor] = None,
        input_pos: Optional[torch.Tensor] = None,
        documents: Optional[Documents] = None,
    ) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [b, s, d].
            mask (Optional[torch.Tensor]): bool, True = may attend; [b, s, s] without a cache,
                [b, s, max_seq_len] with one. None means causal (required with a cache).
            input_pos (Optional[torch.Tensor]): [b, s] positions; with a cache also the
                slots written. None means ``0 .. s-1``.
            documents (Optional[Documents]): the rows hold several documents: attention
                stays inside each one (packed and padding-free rows), without a mask.

        Returns:
            torch.Tensor: [b, s, d].
        """
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim)  # [b, s, n_h, h_d]
        k = self.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim)  # [b, s, n_kv, h_d]
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim)  # [b, s, n_kv, h_d]
        if self.q_norm is not None:
            q = self.q_norm(q)
        if self.k_norm is not None:
            k = self.k_norm(k)
        q = self.pos_embeddings(q, input_pos)
        k = self.pos_embeddings(k, input_pos)
        dropout_p = self.attn_dropout if self.training else 0.0

        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [b, n, s, h_d]
        q_idx = None
        if documents is not None:
            if mask is not None or self.kv_cache is not None:
                raise ValueError("documents cannot be combined with a mask or a KV cache")
        elif self.kv_cache is not None:
            if mask is None:
                raise ValueError("MultiHeadAttention with a KV cache needs an explicit mask")
            if input_pos is None:
                input_pos = torch.arange(s, device=x.device)
            k, v = self.kv_cache.update(input_pos, k, v)  # [b, n_kv, max_seq_len, h_d]
            q_idx = input_pos  # the slot of each query, where its window ends

        out = attend(
            q, k, v,
            mask=mask,
            documents=documents,
            q_idx=q_idx,
            scale=self.scale,
            softcap=self.softcap,
            window=self.sliding_window,
            dropout_p=dropout_p,
        )  # [b, n_h, s, h_d]
        out = out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)  # [b, s, n_h*h_d]
        return self.output_proj(out)
