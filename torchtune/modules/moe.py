"""Mixture-of-experts MLP: a top-k router over stacked SwiGLU experts.

``MoE`` takes a layer's MLP slot (``TransformerDecoderLayer.mlp``). Each token's router
logits ``x @ router.T`` go through a softmax in fp32; its ``experts_per_token`` most
probable experts run on it (their weights renormalised to sum to one when
``norm_topk_prob``) and their outputs, times those weights, are summed, as transformers'
``Qwen3MoeSparseMoeBlock`` and ``MixtralSparseMoeBlock`` compute it. The experts are stacked
parameters (``experts.gate_proj [E, h, d]``, ``up_proj [E, h, d]``, ``down_proj [E, d, h]``),
so FSDP shards them like any other parameter and a checkpoint's per-expert tensors stack
into them.

Two kernels compute the experts, equal in outputs and gradients:

- ``grouped``: the tokens sorted by expert, each projection one ``torch._grouped_mm`` over
  the groups (a CUDA grouped GEMM on sm90+ in bf16; torch's CPU kernel in fp32);
- ``loop``: the tokens sorted by expert, one matmul per expert that has tokens (a loop
  over experts, never over tokens).

``kernel="auto"`` takes ``grouped`` where torch runs it for the input (checked at run time)
and ``loop`` elsewhere.

The load-balancing auxiliary loss (Switch Transformer eq. 4-6, transformers'
``load_balancing_loss_func``) needs every MoE layer's routing: each forward leaves its
``RouterStats`` in ``router_stats``; ``load_balancing_loss`` combines them.
"""

from dataclasses import dataclass
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from torchtune._errors import UserValueError

_ACTIVATIONS = {"silu": F.silu}
KERNELS = ("auto", "grouped", "loop")


@dataclass
class RouterStats:
    """One MoE layer's routing of one forward, what the auxiliary loss needs.

    Attributes:
        tokens_per_expert (torch.Tensor): ``[E]`` fp32 count of top-k assignments (no grad).
        prob_per_expert (torch.Tensor): ``[E]`` fp32 sum over tokens of the router's
            softmax probability (carries the router's gradient).
        num_tokens (int): tokens routed.
        z (torch.Tensor): fp32 sum over tokens of ``logsumexp(logits) ** 2`` (the router
            z-loss's numerator).
    """

    tokens_per_expert: torch.Tensor
    prob_per_expert: torch.Tensor
    num_tokens: int
    z: torch.Tensor


def load_balancing_loss(stats: Iterable[RouterStats]) -> Optional[torch.Tensor]:
    """``E * sum_e f_e * P_e`` over all MoE layers together, as transformers computes it:
    ``f_e`` the top-k assignments of expert e per routed token, ``P_e`` its mean router
    probability, both summed over layers before dividing by the tokens of all layers.
    None when there are no stats (a dense model)."""
    stats = list(stats)
    if not stats:
        return None
    rows = sum(s.num_tokens for s in stats)
    f = sum(s.tokens_per_expert for s in stats) / rows
    p = sum(s.prob_per_expert for s in stats) / rows
    return (f * p).sum() * f.numel()


def router_z_loss(stats: Iterable[RouterStats]) -> Optional[torch.Tensor]:
    """Mean over routed tokens (all layers) of ``logsumexp(router logits) ** 2`` (ST-MoE,
    Zoph et al. 2022): keeps the router's logits small. None for a dense model."""
    stats = list(stats)
    if not stats:
        return None
    return sum(s.z for s in stats) / sum(s.num_tokens for s in stats)


class GroupedExperts(nn.Module):
    """``E`` SwiGLU experts as stacked parameters.

    Args:
        dim (int): model width d.
        hidden_dim (int): each expert's hidden size h.
        num_experts (int): E.
        activation (str): the gate activation (``"silu"``).
    """

    def __init__(self, dim: int, hidden_dim: int, num_experts: int, activation: str = "silu") -> None:
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.up_proj = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.act = _ACTIVATIONS[activation]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.gate_proj, self.up_proj, self.down_proj):
            bound = p.shape[-1] ** -0.5  # nn.Linear's default range, per expert
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, counts: torch.Tensor, kernel: str) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): ``[n, d]`` tokens sorted by expert.
            counts (torch.Tensor): ``[E]`` tokens of each expert, in that order.
            kernel (str): ``"grouped"`` or ``"loop"``.

        Returns:
            torch.Tensor: ``[n, d]``, each row its expert's output.
        """
        if kernel == "grouped":
            ends = counts.cumsum(0).to(torch.int32)  # each group's end row
            gate = torch._grouped_mm(x, self.gate_proj.transpose(-2, -1), offs=ends)  # [n, h]
            up = torch._grouped_mm(x, self.up_proj.transpose(-2, -1), offs=ends)  # [n, h]
            return torch._grouped_mm(self.act(gate) * up, self.down_proj.transpose(-2, -1), offs=ends)
        outs = []
        start = 0
        for e, count in enumerate(counts.tolist()):  # a host sync; E iterations
            if count:
                h = x[start : start + count]  # [c, d]
                hidden = self.act(h @ self.gate_proj[e].t()) * (h @ self.up_proj[e].t())  # [c, h]
                outs.append(hidden @ self.down_proj[e].t())  # [c, d]
            start += count
        return torch.cat(outs) if outs else x.new_zeros(0, x.shape[-1])


def grouped_mm_runs(x: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` serves ``x`` here: CPU in fp32; CUDA on sm90+ in bf16."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x.is_cuda:
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    return x.device.type == "cpu" and x.dtype == torch.float32


class MoE(nn.Module):
    """A top-k routed mixture of SwiGLU experts (module docstring).

    Args:
        dim (int): model width d.
        hidden_dim (int): each expert's hidden size.
        num_experts (int): E.
        experts_per_token (int): k.
        norm_topk_prob (bool): renormalise the k weights to sum to one (Qwen 3 MoE: per
            config.json; Mixtral: always).
        router (Optional[nn.Module]): ``d -> E`` without bias (a ``LoRALinear`` when the
            router is adapted); None: an ``nn.Linear``.
        shared_expert (Optional[nn.Module]): a dense MLP every token also goes through,
            added to the experts' sum (Qwen 2 MoE, DeepSeek); None: none.
        kernel (str): ``"auto"``, ``"grouped"`` or ``"loop"``.

    Raises:
        UserValueError: ``experts_per_token`` not in ``[1, num_experts]``, an unknown kernel.
    """

    def __init__(
        self,
        *,
        dim: int,
        hidden_dim: int,
        num_experts: int,
        experts_per_token: int,
        norm_topk_prob: bool,
        router: Optional[nn.Module] = None,
        shared_expert: Optional[nn.Module] = None,
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        if not 1 <= experts_per_token <= num_experts:
            raise UserValueError(
                f"experts_per_token ({experts_per_token}) must be in [1, num_experts ({num_experts})]"
            )
        if kernel not in KERNELS:
            raise UserValueError(f"MoE kernel {kernel!r} is not one of {list(KERNELS)}")
        self.num_experts = num_experts
        self.experts_per_token = experts_per_token
        self.norm_topk_prob = norm_topk_prob
        self.router = router if router is not None else nn.Linear(dim, num_experts, bias=False)
        self.experts = GroupedExperts(dim, hidden_dim, num_experts)
        self.shared_expert = shared_expert
        self.kernel = kernel
        self.router_stats: Optional[RouterStats] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): ``[b, s, d]``.

        Returns:
            torch.Tensor: ``[b, s, d]``; ``router_stats`` holds this call's routing.
        """
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [n, d]
        logits = self.router(flat)  # [n, E]
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # [n, E]
        weights, chosen = torch.topk(probs, self.experts_per_token, dim=-1)  # [n, k]
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(x.dtype)

        k = self.experts_per_token
        order = chosen.reshape(-1).argsort(stable=True)  # assignments grouped by expert
        token = order // k  # [n * k] the token of each sorted assignment
        counts = torch.bincount(chosen.reshape(-1), minlength=self.num_experts)  # [E]
        kernel = self.kernel
        if kernel == "auto":
            kernel = "grouped" if grouped_mm_runs(flat) else "loop"
        y = self.experts(flat[token], counts, kernel)  # [n * k, d]
        y = y * weights.reshape(-1)[order, None]
        # Summed per token in the order of the sorted assignments: ascending expert, as the
        # reference adds them.
        out = torch.zeros_like(flat).index_add_(0, token, y)
        if self.shared_expert is not None:
            out = out + self.shared_expert(flat)
        self.router_stats = RouterStats(
            tokens_per_expert=counts.float(),
            prob_per_expert=probs.sum(dim=0),
            num_tokens=flat.shape[0],
            z=torch.logsumexp(logits.float(), dim=-1).pow(2).sum(),
        )
        return out.reshape(shape)


def moe_router_stats(model: nn.Module) -> list:
    """The ``RouterStats`` of every ``MoE`` layer of ``model`` from its last forward
    (empty for a dense model)."""
    return [m.router_stats for m in model.modules() if isinstance(m, MoE) and m.router_stats is not None]


def training_aux_loss(model: nn.Module) -> Optional[torch.Tensor]:
    """The load-balancing loss of ``model``'s last forward times its description's
    ``router_aux_loss_coef``, what a recipe adds to a training step's loss (per token
    averaged: transformers' ``loss + coef * aux_loss``); None for a dense model, in eval
    mode, or with the coefficient 0."""
    coef = getattr(getattr(model, "description", None), "router_aux_loss_coef", 0.0)
    if not model.training or not coef:
        return None
    aux = load_balancing_loss(moe_router_stats(model))
    return None if aux is None else coef * aux
