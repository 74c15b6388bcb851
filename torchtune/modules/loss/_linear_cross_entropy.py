"""The output projection and the cross-entropy in one pass, a chunk of tokens at a time."""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX
from torchtune.modules.transformer import softcap_logits, TiedLinear


class _LinearCrossEntropyFn(torch.autograd.Function):
    """``sum_i CE(hidden[i] @ weight.T, targets[i])`` with every target valid.

    The loss is the last node of the graph, so the gradients can be computed in the
    forward, chunk by chunk, while each chunk's logits are at hand: the [n, v] logits
    never exist at once, and nothing is recomputed. ``d loss / d logits`` of a chunk is
    ``softmax(logits) - onehot(target)``; it gives ``d hidden = g @ weight`` and
    ``d weight += g.T @ hidden``. ``backward`` only scales them by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int):  # type: ignore[override]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = None
        if need_w:  # fp32: the first chunk's addmm_ (beta=0) writes it whole, no zero fill
            allocate = torch.empty_like if weight.dtype == torch.float32 else torch.zeros_like
            grad_weight = allocate(weight, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.size(0), chunk_size):
            h = hidden[start : start + chunk_size]  # [c, d]
            t = targets[start : start + chunk_size]  # [c]
            logits = (h @ weight.t()).float()  # [c, v], fp32 as the loss needs
            target_logits = logits.gather(1, t[:, None]).squeeze(1)  # [c]
            # log-sum-exp and softmax in place of the logits: the chunk's [c, v] is the
            # largest tensor alive at the end of the forward, so no second one is made.
            row_max = logits.amax(dim=-1, keepdim=True)  # [c, 1]
            exp_sum = logits.sub_(row_max).exp_().sum(dim=-1, keepdim=True)  # [c, 1]
            lse = (row_max + exp_sum.log()).squeeze(1)  # [c]
            total += (lse - target_logits).sum()
            if need_h or need_w:
                grad = logits.div_(exp_sum)  # softmax
                grad.scatter_add_(1, t[:, None], grad.new_full((t.numel(), 1), -1.0))
                grad = grad.to(weight.dtype)
                if need_h:
                    torch.mm(grad, weight, out=grad_hidden[start : start + chunk_size])
                if need_w:
                    if grad_weight.dtype == grad.dtype:
                        grad_weight.addmm_(grad.t(), h, beta=1 if start else 0)
                    else:  # bf16 weights: accumulate the chunks' products in fp32
                        grad_weight += grad.t() @ h
        # Not inputs or outputs of the graph: kept on ctx rather than saved and unpacked.
        ctx.grad_hidden = grad_hidden
        ctx.grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.grad_hidden, ctx.grad_weight
        ctx.grad_hidden = ctx.grad_weight = None  # one backward; free them with the graph
        if grad_hidden is not None:
            grad_hidden.mul_(grad_total.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight.mul_(grad_total.to(grad_weight.dtype))
        return grad_hidden, grad_weight, None, None


class LinearCrossEntropyLoss(nn.Module):
    """Next-token cross-entropy with the model's output projection folded in, summed (not
    averaged) over target tokens, like :class:`ChunkedCrossEntropyLoss`.

    ``set_model_output(model)`` makes the model return its final hidden states
    (``model.skip_output_layer = True``) and hands the output projection to the loss, which
    then takes ``(hidden [b, s, d], labels [b, s])`` instead of ``(logits, labels)``. It
    differs from projecting everything and calling ``ChunkedCrossEntropyLoss`` only in
    floating-point rounding, and saves both memory and time:

    - the fp32 logits exist only ``num_output_chunks``-th at a time (the full [b, s, v]
      logits, their softmax and their gradient are the largest tensors of a small model's
      step: 3 x 262 MB for b=4, s=512, v=32000);
    - the projection runs only on positions that have a target: the prompt tokens masked
      by ``train_on_input=False``, padding and the last position of each row need no
      logits at all;
    - the gradients are computed in the forward while each chunk's logits exist, so
      nothing is recomputed (``_LinearCrossEntropyFn``).

    A bias-free ``nn.Linear`` or a ``TiedLinear`` (the output tied to the token embedding:
    the fused gradient then accumulates into the one shared weight, next to the
    embedding lookup's) takes this path. Any other projection (e.g. a LoRA adapter on it)
    is called as a module on each chunk of selected positions instead, as is every
    projection of a model with a final-logit soft-cap (``final_softcap``, Gemma 2), which
    the loss applies to each chunk's logits as the model would.

    Args:
        num_output_chunks (int): the selected positions are projected in this many chunks,
            or fewer: see ``min_chunk_size``.
        ignore_index (int): label value that contributes no loss.
        min_chunk_size (int): no chunk has fewer positions (unless there are fewer in all).
            A thin [c, d] x [d, v] product runs far below the machine's matmul peak (on
            CPU 32 rows against a 32000 x 768 projection reach a third of what 512 do),
            while a chunk's fp32 logits are only ``c * v * 4`` bytes (65 MB for 512 x 32000).

    Raises:
        ValueError: if ``num_output_chunks`` or ``min_chunk_size`` < 1.
    """

    def __init__(
        self,
        num_output_chunks: int = 8,
        ignore_index: int = CROSS_ENTROPY_IGNORE_IDX,
        min_chunk_size: int = 512,
    ):
        super().__init__()
        if num_output_chunks < 1:
            raise UserValueError(f"num_output_chunks must be >= 1, got {num_output_chunks}")
        if min_chunk_size < 1:
            raise UserValueError(f"min_chunk_size must be >= 1, got {min_chunk_size}")
        self.num_output_chunks = num_output_chunks
        self.ignore_index = ignore_index
        self.min_chunk_size = min_chunk_size
        # A plain attribute, not a submodule: the projection's weights stay the model's own
        # (one state-dict entry, one optimizer entry).
        self._output: Optional[list] = None
        self._softcap: Optional[float] = None

    def set_model_output(self, model: nn.Module) -> None:
        """Take over ``model.output``; the model then returns hidden states from ``forward``.

        Args:
            model (nn.Module): a ``TransformerDecoder`` (anything with ``output`` and
                ``skip_output_layer``).
        """
        model.skip_output_layer = True
        self._output = [model.output]
        self._softcap = getattr(model, "final_softcap", None)

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden (torch.Tensor): [b, s, d] final (normed) hidden states of the model.
            labels (torch.Tensor): [b, s] unshifted labels.

        Returns:
            tuple[torch.Tensor, torch.Tensor]: summed loss (fp32 scalar) and the number of
            target tokens (long scalar).

        Raises:
            RuntimeError: if ``set_model_output`` has not been called.
        """
        if self._output is None:
            raise RuntimeError("LinearCrossEntropyLoss: call set_model_output(model) first")
        output = self._output[0]
        # Position t predicts labels[:, t + 1]; the last position predicts nothing.
        targets = torch.cat([labels[:, 1:], labels.new_full((labels.size(0), 1), self.ignore_index)], 1)
        targets = targets.reshape(-1)
        keep = (targets != self.ignore_index).nonzero().squeeze(1)  # positions with a target
        h = hidden.reshape(-1, hidden.size(-1)).index_select(0, keep)  # [n, d]
        t = targets.index_select(0, keep)  # [n]
        num_tokens = torch.tensor(keep.numel(), device=labels.device)
        if keep.numel() == 0:
            return hidden.sum().float() * 0.0, num_tokens  # keeps the graph: backward gives zeros
        chunk = max(-(-keep.numel() // self.num_output_chunks), self.min_chunk_size)
        weight = _plain_weight(output)
        if weight is not None and type(weight).__name__ == "DTensor":
            # Sharded on its own (custom_sharded_layers) and so never gathered: the model's
            # forward, which would gather it, no longer calls the output projection.
            raise UserValueError(
                "LinearCrossEntropyLoss applies the output projection itself, so the output "
                "weight (or the token embedding it is tied to) cannot be sharded on its own: "
                "drop it from custom_sharded_layers, or use ChunkedCrossEntropyLoss"
            )
        if weight is not None and self._softcap is None:
            return _LinearCrossEntropyFn.apply(h, weight, t, chunk), num_tokens
        total = h.new_zeros((), dtype=torch.float32)
        for h_chunk, t_chunk in zip(h.split(chunk), t.split(chunk)):
            logits = softcap_logits(output(h_chunk).float(), self._softcap)
            total = total + F.cross_entropy(logits, t_chunk, reduction="sum")
        return total, num_tokens


def _plain_weight(output: nn.Module) -> Optional[torch.Tensor]:
    """The weight of a projection that is exactly ``h @ weight.T``, else None.

    ``type(...) is`` rather than ``isinstance``: a subclass may change ``forward``.
    """
    if type(output) is nn.Linear and output.bias is None:
        return output.weight
    if type(output) is TiedLinear:
        return output.weight
    return None
