"""Autoregressive decoding with the decoder's KV cache."""

from typing import Iterable, Optional

import torch
from torch import nn

from torchtune._errors import UserValueError


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    rng: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Pick one token per row from ``logits``.

    Args:
        logits (torch.Tensor): [..., v] unnormalised scores.
        temperature (float): divides the logits; 0 means greedy (argmax, ``top_k`` ignored).
        top_k (Optional[int]): sample only among the ``top_k`` highest-scoring tokens.
        rng (Optional[torch.Generator]): generator on the logits' device, for repeatable
            sampling; None uses the global RNG.

    Returns:
        torch.Tensor: long [...] token ids.

    Raises:
        ValueError: if ``temperature`` is negative or ``top_k`` is below 1.

    Example:
        >>> sample(torch.tensor([[0.1, 3.0, 0.2]]), temperature=0)
        tensor([1])
    """
    if temperature < 0:
        raise UserValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserValueError(f"top_k must be >= 1 or None, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth_best = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # [..., 1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    flat = probs.reshape(-1, probs.size(-1))  # [rows, v]
    return torch.multinomial(flat, 1, generator=rng).reshape(probs.shape[:-1])


def _first_float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _teardown_caches(model: nn.Module) -> None:
    teardown = getattr(model, "teardown_caches", None)
    if teardown is not None:
        teardown()
        return
    # Models without teardown_caches: drop the per-layer caches and the cache mask, which is
    # what makes caches_are_enabled() false again.
    for module in model.modules():
        if hasattr(module, "kv_cache"):
            module.kv_cache = None
    if hasattr(model, "causal_mask"):
        model.causal_mask = None


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    stop_tokens: Optional[Iterable[int]] = None,
    rng: Optional[torch.Generator] = None,
    pad_id: int = 0,
) -> torch.Tensor:
    """Extend ``prompt`` by up to ``max_new_tokens`` tokens, one at a time, with a KV cache.

    The prompt is run through the model once (prefill); every later step feeds only the newest
    token with its position (``input_pos``). If the model's caches are not set up, they are set
    up for this batch and torn down afterwards, so a training model is left as it was; caches
    that are already set up are reset and kept. The model runs in eval mode (no dropout) and
    its training flag is restored afterwards.

    Args:
        model (nn.Module): a ``TransformerDecoder`` (``forward(tokens, input_pos=...)``,
            ``setup_caches``, ``reset_caches``, ``caches_are_enabled``, ``max_seq_len``).
        prompt (torch.Tensor): long [s] or [b, s] token ids, on the model's device. Rows of a
            batch share one length (no padding).
        max_new_tokens (int): most tokens to add.
        temperature (float): sampling temperature; 0 is greedy.
        top_k (Optional[int]): sample among the ``top_k`` most likely tokens.
        stop_tokens (Optional[Iterable[int]]): ids (e.g. EOS) that end a row. The stop token is
            kept; a row that has stopped is filled with ``pad_id`` until every row has stopped.
        rng (Optional[torch.Generator]): generator for sampling, on the model's device.
        pad_id (int): filler after a row's stop token.

    Returns:
        torch.Tensor: long [s + n] or [b, s + n], the prompt followed by the ``n`` generated
        tokens (``n <= max_new_tokens``; fewer if every row stopped early).

    Raises:
        ValueError: if the prompt is empty or not 1-D/2-D, ``max_new_tokens`` is negative, or
            the prompt plus ``max_new_tokens`` exceeds the model's ``max_seq_len``.

    Example:
        >>> out = generate(model, torch.tensor([1, 403, 407]), max_new_tokens=20, temperature=0)
    """
    if prompt.dim() not in (1, 2):
        raise UserValueError(f"prompt must be [s] or [b, s] token ids, got shape {tuple(prompt.shape)}")
    if prompt.numel() == 0:
        raise UserValueError("prompt is empty: give at least one token (e.g. BOS)")
    if max_new_tokens < 0:
        raise UserValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    single = prompt.dim() == 1
    tokens = prompt[None] if single else prompt  # [b, s]
    b, s = tokens.shape
    max_seq_len = getattr(model, "max_seq_len", None)
    if max_seq_len is not None and s + max_new_tokens > max_seq_len:
        raise UserValueError(
            f"prompt length {s} + max_new_tokens {max_new_tokens} exceeds the model's "
            f"max_seq_len {max_seq_len}"
        )
    if max_new_tokens == 0:
        return prompt.clone()

    device = tokens.device
    stop = None
    if stop_tokens is not None:
        stop = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=device)
    was_training = model.training
    set_up_here = not model.caches_are_enabled()
    model.eval()
    if set_up_here:
        model.setup_caches(batch_size=b, dtype=_first_float_dtype(model))
    else:
        model.reset_caches()
    try:
        input_pos = torch.arange(s, device=device).expand(b, s)  # [b, s]
        logits = model(tokens, input_pos=input_pos)[:, -1]  # prefill: [b, v]
        generated = []
        done = torch.zeros(b, dtype=torch.bool, device=device)
        for i in range(max_new_tokens):
            if i > 0:
                pos = torch.full((b, 1), s + i - 1, dtype=torch.long, device=device)  # [b, 1]
                logits = model(generated[-1][:, None], input_pos=pos)[:, -1]  # [b, v]
            token = sample(logits, temperature=temperature, top_k=top_k, rng=rng)  # [b]
            token = token.masked_fill(done, pad_id)
            generated.append(token)
            if stop is not None:
                done = done | torch.isin(token, stop)
                if bool(done.all()):
                    break
    finally:
        if set_up_here:
            _teardown_caches(model)
        model.train(was_training)

    out = torch.cat([tokens, torch.stack(generated, dim=1)], dim=1)  # [b, s + n]
    return out[0] if single else out
