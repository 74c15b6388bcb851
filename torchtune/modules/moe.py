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

LoRA adapts the router as any linear (a ``LoRALinear`` passed as ``router``) and the experts
with stacked adapters inside ``GroupedExperts``; QLoRA keeps the expert stacks in NF4.
"""

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from torchtune._errors import UserValueError
from torchtune.modules.low_precision import (
    check_nf4_size,
    dequantize,
    is_nf4,
    quantize_incoming_weight,
    to_nf4,
)

_ACTIVATIONS = {"silu": F.silu}
KERNELS = ("auto", "grouped", "loop")
_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_ADAPTERS = ("lora_gate_a", "lora_gate_b", "lora_up_a", "lora_up_b", "lora_down_a", "lora_down_b")
# The state-dict suffixes of stacked expert adapters.
EXPERT_ADAPTERS = tuple(f".experts.{name}" for name in _ADAPTERS)


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


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor, kernel: str) -> torch.Tensor:
    """Each group of rows times its expert's matrix transposed: rows ``x[g]`` (the tokens of
    expert e, in expert order) times ``weight[e].T``.

    Args:
        x (torch.Tensor): ``[n, in]`` rows sorted by expert.
        weight (torch.Tensor): ``[E, out, in]``.
        counts (torch.Tensor): ``[E]`` rows of each expert.
        kernel (str): ``"grouped"`` (one ``torch._grouped_mm``) or ``"loop"`` (one matmul per
            expert that has rows). ``"grouped"`` falls back to ``"loop"`` where a row of ``x``
            or ``weight`` is not a multiple of 16 bytes, which the grouped GEMM requires
            (a LoRA rank of 4 in bf16, say).

    Returns:
        torch.Tensor: ``[n, out]``.
    """
    if kernel == "grouped" and all(n * x.element_size() % 16 == 0 for n in weight.shape[1:]):
        ends = counts.cumsum(0).to(torch.int32)  # each group's end row
        return torch._grouped_mm(x, weight.transpose(-2, -1), offs=ends)
    outs = []
    start = 0
    for e, count in enumerate(counts.tolist()):  # a host sync; E iterations
        if count:
            outs.append(x[start : start + count] @ weight[e].t())
        start += count
    return torch.cat(outs) if outs else x.new_zeros(0, weight.shape[1])


class _FrozenNF4GroupedLinear(torch.autograd.Function):
    """``grouped_linear`` with a frozen NF4 stack ``[E * out, in]``: dequantized in forward
    and again in backward, so no full-precision copy of a layer's experts outlives its use
    (as torchao's ``linear_nf4`` does for one matrix)."""

    @staticmethod
    def forward(ctx, x, weight, num_experts, counts, kernel):
        ctx.weight, ctx.num_experts, ctx.kernel = weight, num_experts, kernel
        ctx.save_for_backward(counts)
        dense = dequantize(weight, x.dtype).unflatten(0, (num_experts, -1))  # [E, out, in]
        return grouped_linear(x, dense, counts, kernel)

    @staticmethod
    def backward(ctx, grad):
        (counts,) = ctx.saved_tensors
        dense = dequantize(ctx.weight, grad.dtype).unflatten(0, (ctx.num_experts, -1))
        return grouped_linear(grad.contiguous(), dense.transpose(-2, -1), counts, ctx.kernel), None, None, None, None


class GroupedExperts(nn.Module):
    """``E`` SwiGLU experts as stacked parameters, optionally adapted (LoRA) or frozen in NF4.

    ``gate_proj [E, h, d]``, ``up_proj [E, h, d]`` and ``down_proj [E, d, h]``: expert e
    computes ``down_e(act(gate_e x) * up_e x)``.

    LoRA (``lora_rank > 0``): one adapter per expert and projection, stacked:
    ``lora_{gate,up}_a [E, r, d]``, ``lora_{gate,up}_b [E, h, r]``, ``lora_down_a [E, r, h]``,
    ``lora_down_b [E, d, r]``; expert e's projection W becomes ``W + (alpha / r) B_e A_e``,
    as peft's LoRA on each expert's ``gate_proj``, ``up_proj`` and ``down_proj`` linear (the
    checkpoints' per-expert layout, which peft fuses for transformers 5 on load). ``b``
    starts at zero; dropout applies to each adapter's input.

    ``quantize_base``: the three stacks are frozen torchao ``NF4Tensor``s stored flat,
    ``[E * out, in]`` (NF4 holds at most two dimensions), quantized as a checkpoint's
    ``[E, out, in]`` stacks load and dequantized a projection at a time in forward and
    backward. ``unflatten_nf4_experts`` gives a state dict its 3-D stacks back.

    Args:
        dim (int): model width d.
        hidden_dim (int): each expert's hidden size h.
        num_experts (int): E.
        activation (str): the gate activation (``"silu"``).
        lora_rank (int): r; 0: no adapters.
        lora_alpha (float): the update's scale numerator.
        lora_dropout (float): dropout on each adapter's input while training.
        quantize_base (bool): store the experts in NF4 (QLoRA).

    Raises:
        UserValueError: a quantized stack whose size is not a multiple of 16384.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_experts: int,
        activation: str = "silu",
        *,
        lora_rank: int = 0,
        lora_alpha: float = 0.0,
        lora_dropout: float = 0.0,
        quantize_base: bool = False,
    ) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.hidden_dim = hidden_dim
        self.quantize_base = quantize_base
        self.gate_proj = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.up_proj = nn.Parameter(torch.empty(num_experts, hidden_dim, dim))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden_dim))
        self.act = _ACTIVATIONS[activation]
        self.rank = lora_rank
        if lora_rank:
            self.alpha = lora_alpha
            self.scaling = lora_alpha / lora_rank
            self.use_dora = False
            self.dropout = nn.Dropout(p=lora_dropout) if lora_dropout > 0 else nn.Identity()
            for name in _PROJECTIONS:
                out_dim, in_dim = getattr(self, name).shape[1:]
                self.register_parameter(f"lora_{name[:-5]}_a", nn.Parameter(torch.empty(num_experts, lora_rank, in_dim)))
                self.register_parameter(f"lora_{name[:-5]}_b", nn.Parameter(torch.empty(num_experts, out_dim, lora_rank)))
        self.reset_parameters()
        if quantize_base:
            for name in _PROJECTIONS:
                stack = getattr(self, name)
                check_nf4_size(stack.shape[-1], stack.shape[0] * stack.shape[1])
                setattr(self, name, nn.Parameter(to_nf4(stack.detach().flatten(0, 1)), requires_grad=False))

    def reset_parameters(self) -> None:
        """nn.Linear's default range per expert for the base; LoRA's kaiming-uniform ``a``
        (bound ``1 / sqrt(in)``, as peft) and zero ``b``."""
        for name in _PROJECTIONS:
            p = getattr(self, name)
            nn.init.uniform_(p, -p.shape[-1] ** -0.5, p.shape[-1] ** -0.5)
        if self.rank:
            for name in _PROJECTIONS:
                a, b = getattr(self, f"lora_{name[:-5]}_a"), getattr(self, f"lora_{name[:-5]}_b")
                nn.init.uniform_(a, -a.shape[-1] ** -0.5, a.shape[-1] ** -0.5)
                nn.init.zeros_(b)

    def adapter_params(self) -> List[str]:
        """Names of the adapter parameters (none without LoRA)."""
        return list(_ADAPTERS) if self.rank else []

    def _project(self, name: str, x: torch.Tensor, counts: torch.Tensor, kernel: str) -> torch.Tensor:
        """Projection ``name`` of each group by its expert, adapter included."""
        weight = getattr(self, name)
        if self.quantize_base:
            out = _FrozenNF4GroupedLinear.apply(x, weight, self.num_experts, counts, kernel)
        else:
            out = grouped_linear(x, weight, counts, kernel)
        if not self.rank:
            return out
        a, b = getattr(self, f"lora_{name[:-5]}_a"), getattr(self, f"lora_{name[:-5]}_b")
        inner = grouped_linear(self.dropout(x), a, counts, kernel)  # [n, r]
        return out + self.scaling * grouped_linear(inner, b, counts, kernel)

    def forward(self, x: torch.Tensor, counts: torch.Tensor, kernel: str) -> torch.Tensor:
        """
        Args:
            x (torch.Tensor): ``[n, d]`` tokens sorted by expert.
            counts (torch.Tensor): ``[E]`` tokens of each expert, in that order.
            kernel (str): ``"grouped"`` or ``"loop"``.

        Returns:
            torch.Tensor: ``[n, d]``, each row its expert's output.
        """
        gate = self._project("gate_proj", x, counts, kernel)  # [n, h]
        up = self._project("up_proj", x, counts, kernel)  # [n, h]
        return self._project("down_proj", self.act(gate) * up, counts, kernel)  # [n, d]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if self.quantize_base:
            for name in _PROJECTIONS:
                src = state_dict.get(prefix + name)
                if isinstance(src, torch.Tensor) and src.dim() == 3:  # a checkpoint's stack
                    state_dict[prefix + name] = src.flatten(0, 1)
                quantize_incoming_weight(state_dict, prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        extra = f", rank={self.rank}, alpha={self.alpha}" if self.rank else ""
        return f"num_experts={self.num_experts}, hidden_dim={self.hidden_dim}{extra}" + (
            ", quantize_base=True" if self.quantize_base else ""
        )


def unflatten_nf4_experts(state_dict: Dict[str, torch.Tensor], dtype: Optional[torch.dtype] = None) -> Dict[str, torch.Tensor]:
    """A copy of ``state_dict`` whose NF4 expert stacks (``...experts.{gate,up,down}_proj``
    ``[E * out, in]``) are dequantized and shaped ``[E, out, in]`` again, as the checkpoint
    stores them. E is the layer's ``gate_proj`` rows over its ``down_proj`` columns (E * h
    over h). Other entries are passed through.

    Args:
        state_dict (Dict[str, torch.Tensor]): a model's state dict.
        dtype (Optional[torch.dtype]): the dequantized dtype; None: the quantized-from dtype.
    """
    out = dict(state_dict)
    for key, value in state_dict.items():
        if not (key.endswith(".experts.gate_proj") and is_nf4(value)):
            continue
        prefix = key[: -len("gate_proj")]
        num_experts = value.shape[0] // state_dict[prefix + "down_proj"].shape[1]
        for name in _PROJECTIONS:
            out[prefix + name] = dequantize(state_dict[prefix + name], dtype).unflatten(0, (num_experts, -1))
    return out


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
        experts (Optional[GroupedExperts]): the experts (adapted or quantized); None: plain
            ``GroupedExperts(dim, hidden_dim, num_experts)``.
        shared_expert (Optional[nn.Module]): a dense MLP every token also goes through,
            added to the experts' sum (Qwen 2 MoE, DeepSeek); None: none.
        shared_expert_gate (Optional[nn.Module]): ``d -> 1``; the shared expert's output
            is scaled by ``sigmoid(gate(x))`` per token (Qwen 2 MoE); None: added as is
            (DeepSeek).
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
        experts: Optional[GroupedExperts] = None,
        shared_expert: Optional[nn.Module] = None,
        shared_expert_gate: Optional[nn.Module] = None,
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
        self.experts = experts if experts is not None else GroupedExperts(dim, hidden_dim, num_experts)
        self.shared_expert = shared_expert
        self.shared_expert_gate = shared_expert_gate
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
            shared = self.shared_expert(flat)  # [n, d]
            if self.shared_expert_gate is not None:
                shared = torch.sigmoid(self.shared_expert_gate(flat)) * shared
            out = out + shared
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


def training_aux_loss(model: nn.Module, z_loss_coef: float = 0.0) -> Optional[torch.Tensor]:
    """What a recipe adds to a training step's (per-token) loss for a mixture of experts:
    the load-balancing loss of ``model``'s last forward times its description's
    ``router_aux_loss_coef`` (transformers' ``loss + coef * aux_loss``), plus
    ``z_loss_coef`` times the router z-loss (a recipe's ``router_z_loss_coef``).

    Returns:
        Optional[torch.Tensor]: None for a dense model, in eval mode, or with both
        coefficients 0.
    """
    coef = getattr(getattr(model, "description", None), "router_aux_loss_coef", 0.0)
    if not model.training or not (coef or z_loss_coef):
        return None
    stats = moe_router_stats(model)
    if not stats:
        return None
    aux = coef * load_balancing_loss(stats)
    return aux + z_loss_coef * router_z_loss(stats) if z_loss_coef else aux
