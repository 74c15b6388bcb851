"""The transformer decoder layer and the decoder-only transformer."""

from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules._documents import Documents, block_causal_from_seq_lens
from torchtune.modules.attention import MultiHeadAttention


class TransformerDecoderLayer(nn.Module):
    """Pre-norm residual block::

        x ──┬─ sa_norm ─ attn ─ [sa_scale] ─(+)──┬─ mlp_norm ─ mlp ─ [mlp_scale] ─(+)── out
            └─────────────────────────────────┘└─────────────────────────────────┘

    ``sa_scale`` and ``mlp_scale`` are optional norms on each branch's output before its
    residual add ("sandwich" norms, Gemma 2 and 3; the names are torchtune 0.6.1's).

    Args:
        attn (MultiHeadAttention): self-attention.
        mlp (nn.Module): feed-forward block.
        sa_norm (nn.Module): norm before attention.
        mlp_norm (nn.Module): norm before the feed-forward block.
        sa_scale (Optional[nn.Module]): norm after attention; None: none.
        mlp_scale (Optional[nn.Module]): norm after the feed-forward block; None: none.
    """

    def __init__(
        self,
        *,
        attn: MultiHeadAttention,
        mlp: nn.Module,
        sa_norm: nn.Module,
        mlp_norm: nn.Module,
        sa_scale: Optional[nn.Module] = None,
        mlp_scale: Optional[nn.Module] = None,
    ) -> None:
        super().__init__()
        self.sa_norm = sa_norm
        self.attn = attn
        self.mlp_norm = mlp_norm
        self.mlp = mlp
        self.sa_scale = sa_scale
        self.mlp_scale = mlp_scale

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
            mask (Optional[torch.Tensor]): see ``MultiHeadAttention.forward``.
            input_pos (Optional[torch.Tensor]): see ``MultiHeadAttention.forward``.
            documents (Optional[Documents]): see ``MultiHeadAttention.forward``.

        Returns:
            torch.Tensor: [b, s, d].
        """
        attn_out = self.attn(self.sa_norm(x), mask=mask, input_pos=input_pos, documents=documents)
        if self.sa_scale is not None:
            attn_out = self.sa_scale(attn_out)
        h = x + attn_out
        mlp_out = self.mlp(self.mlp_norm(h))
        if self.mlp_scale is not None:
            mlp_out = self.mlp_scale(mlp_out)
        return h + mlp_out


class TiedLinear(nn.Module):
    """The output projection tied to the token embedding: ``x @ embedding.weight.T``.

    It owns no parameter: the one ``[v, d]`` weight stays the embedding's, so a model's
    state dict holds ``tok_embeddings.weight`` and no ``output.weight``, optimizers see it
    once, and its gradient is the sum of both uses. The embedding is kept out of
    ``_modules`` (it is registered once, as the decoder's ``tok_embeddings``), so
    ``state_dict``, ``to_empty`` and ``named_modules`` do not visit it twice; the weight is
    looked up on every call, so it stays tied after the embedding's parameter is replaced
    (``to_empty``, ``load_state_dict(assign=True)``).

    Args:
        embedding (nn.Embedding): the token embedding whose weight is shared.
    """

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        # Plain attribute, bypassing nn.Module.__setattr__: not a submodule (see above).
        self.__dict__["embedding"] = embedding

    @property
    def weight(self) -> torch.Tensor:
        """The shared ``[v, d]`` weight (``embedding.weight`` itself)."""
        return self.embedding.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): [..., d].

        Returns:
            torch.Tensor: [..., v].
        """
        return F.linear(x, self.embedding.weight)

    def extra_repr(self) -> str:
        v, d = self.embedding.weight.shape
        return f"in_features={d}, out_features={v}, tied to the token embedding"


class TransformerDecoder(nn.Module):
    """Decoder-only transformer: embedding, layers, final norm and output projection.

    Args:
        tok_embeddings (nn.Embedding): v -> d.
        layers (Iterable[TransformerDecoderLayer]): the layers, in order.
        max_seq_len (int): longest sequence the model accepts (and the KV-cache length).
        norm (nn.Module): final norm.
        output (nn.Module): d -> v projection: an ``nn.Linear`` (or LoRA) of its own, or a
            ``TiedLinear(tok_embeddings)`` sharing the embedding's weight.
        embed_scale (Optional[float]): the embeddings are multiplied by it, in their dtype
            (Gemma: ``sqrt(d)``); None: not scaled.
        final_softcap (Optional[float]): logits become ``c * tanh(logits / c)`` (Gemma 2);
            None: none.

    Attributes:
        skip_output_layer (bool): when True, ``forward`` returns the final normed hidden
            states [b, s, d] instead of logits: a loss that owns the output projection
            (``LinearCrossEntropyLoss.set_model_output``) applies it, and the soft-cap
            (``final_softcap``). False by default.
        description (Optional[DecoderDescription]): what the model builders built it from
            (``torchtune.models._description``); None for a decoder assembled by hand.
    """

    def __init__(
        self,
        *,
        tok_embeddings: nn.Embedding,
        layers: Iterable[TransformerDecoderLayer],
        max_seq_len: int,
        norm: nn.Module,
        output: nn.Module,
        embed_scale: Optional[float] = None,
        final_softcap: Optional[float] = None,
    ) -> None:
        super().__init__()
        self.tok_embeddings = tok_embeddings
        self.layers = nn.ModuleList(layers)
        self.norm = norm
        self.output = output
        self.max_seq_len = max_seq_len
        self.embed_scale = embed_scale
        self.final_softcap = final_softcap
        self.skip_output_layer = False
        self.description = None
        # Built by setup_caches; non-persistent, so the state dict is the same with caches.
        self.register_buffer("causal_mask", None, persistent=False)

    def setup_caches(self, batch_size: int, dtype: torch.dtype) -> None:
        """Allocate a KV cache of ``max_seq_len`` slots in every layer (for generation).

        Args:
            batch_size (int): rows decoded together.
            dtype (torch.dtype): dtype of the caches.
        """
        for layer in self.layers:
            layer.attn.setup_cache(batch_size, dtype)
        device = self.tok_embeddings.weight.device
        causal = torch.ones(self.max_seq_len, self.max_seq_len, dtype=torch.bool, device=device)
        self.causal_mask = torch.tril(causal)  # [L, L]

    def reset_caches(self) -> None:
        """Zero every KV cache (start a new generation with the same batch size).

        Raises:
            RuntimeError: if ``setup_caches`` has not been called.
        """
        if not self.caches_are_enabled():
            raise RuntimeError("reset_caches() called before setup_caches()")
        for layer in self.layers:
            layer.attn.kv_cache.reset()

    def teardown_caches(self) -> None:
        """Free every KV cache (back to training mode; ``caches_are_enabled()`` is False)."""
        for layer in self.layers:
            layer.attn.kv_cache = None
        self.causal_mask = None

    def caches_are_enabled(self) -> bool:
        """Whether ``setup_caches`` has been called."""
        return self.layers[0].attn.kv_cache is not None

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        mask: Optional[torch.Tensor] = None,
        input_pos: Optional[torch.Tensor] = None,
        seq_lens: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            tokens (torch.Tensor): [b, s] token ids.
            mask (Optional[torch.Tensor]): bool, True = may attend: [b, s, s] without caches
                (any mask a caller needs), [b, s, max_seq_len] with caches. None means
                causal; with caches it is built from ``input_pos``.
            input_pos (Optional[torch.Tensor]): [b, s] position ids (restarting per packed
                document); with caches also the slots written. None means ``0 .. s-1``.
            seq_lens (Optional[torch.Tensor]): [b, n] lengths of the documents each row
                holds end to end (zero-padded; each row sums to s), as packed and
                padding-free batches give them: attention stays inside each document and
                costs time and memory in proportion to the tokens (no [b, s, s] mask).

        Returns:
            torch.Tensor: logits [b, s, v], in the dtype of the output projection (the
            normed hidden states [b, s, d] if ``skip_output_layer``).

        Raises:
            ValueError: if ``s`` exceeds ``max_seq_len`` without ``input_pos`` (or with caches).
        """
        b, s = tokens.shape
        # Rows of several documents (packed, padding-free) may be longer than max_seq_len:
        # what is bounded is each token's position, which input_pos gives.
        if s > self.max_seq_len and (input_pos is None or self.caches_are_enabled()):
            raise UserValueError(
                f"Sequence length {s} exceeds the model's max_seq_len {self.max_seq_len}"
            )
        if self.caches_are_enabled() and mask is None:
            if input_pos is None:
                input_pos = torch.arange(s, device=tokens.device)
            # Token at position p sees cache slots 0..p.
            mask = self.causal_mask[input_pos].expand(b, s, self.max_seq_len)  # [b, s, L]

        documents = None
        if seq_lens is not None:
            if mask is not None or self.caches_are_enabled():
                raise ValueError("seq_lens cannot be combined with a mask or KV caches")
            if torch.compiler.is_compiling():
                # The per-document loop cannot be traced: a compiled model gets the dense
                # block-causal mask (S x S) instead.
                mask = block_causal_from_seq_lens(seq_lens, s)
            else:
                documents = Documents.from_seq_lens(seq_lens, s)

        h = self.tok_embeddings(tokens)  # [b, s, d]
        if self.embed_scale is not None:
            # In the embedding's dtype, as Gemma's reference multiplies: sqrt(d) as an fp32
            # tensor, then rounded to that dtype.
            h = h * torch.tensor(self.embed_scale, dtype=torch.float32).to(h.dtype)
        for layer in self.layers:
            h = layer(h, mask=mask, input_pos=input_pos, documents=documents)
        h = self.norm(h)
        if self.skip_output_layer:
            return h  # [b, s, d]
        return softcap_logits(self.output(h), self.final_softcap)  # [b, s, v]


def softcap_logits(logits: torch.Tensor, cap: Optional[float]) -> torch.Tensor:
    """``cap * tanh(logits / cap)``, or ``logits`` when ``cap`` is None: the final-logit
    soft-cap, shared by the decoder and the losses that apply its output projection."""
    if cap is None:
        return logits
    return torch.tanh(logits / cap) * cap
