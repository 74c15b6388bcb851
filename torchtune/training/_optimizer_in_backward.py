"""Optimizer steps taken during backward, one parameter at a time.

A plain training step keeps every parameter's gradient alive until ``optimizer.step()``:
for a full fine-tune that is a whole extra copy of the model. Stepping each parameter as
soon as its gradient is complete, then dropping that gradient, leaves at most a few
gradients alive at once. The update is the same one, because an element-wise optimizer
such as AdamW treats every parameter on its own. What cannot work this way is anything
that needs all gradients before any step: global gradient-norm clipping, and gradient
accumulation over several backward passes.
"""

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from torchtune._errors import UserValueError

# Per-group keys that belong to the group itself, never copied from the lead optimizer.
_OWN_GROUP_KEYS = ("params",)


class OptimizerInBackward:
    """One optimizer per parameter, each stepped from that parameter's gradient hook.

    Call ``step()`` after every backward, as with any optimizer. The very first update
    happens there, after backward: that is when the optimizer allocates its state (AdamW:
    two tensors per parameter), and there it is allocated once the activations are freed
    rather than between them. (On CPU the state's small blocks, step counters and tensor
    headers, still land in the holes that freed activations leave in glibc's heap, and
    keep them apart; the full recipe keeps its activations out of that heap instead:
    ``training.activations_in_own_pages``.)
    From then on each parameter is updated, and its gradient dropped, inside backward;
    ``step()`` and ``zero_grad()`` find nothing left to do. Loading a state dict counts as
    the first step.

    The first parameter's optimizer is the *lead*: build the lr scheduler on it
    (``scheduler(opt.lead, ...)``); before every step the others copy its group
    hyperparameters (lr and whatever else a scheduler changes), so the whole model follows
    one schedule.

    Args:
        named_parameters (Iterable[tuple[str, torch.nn.Parameter]]): the parameters to
            optimize, by name (the names key the state dict). Those that do not require
            grad are skipped.
        build_optimizer (Callable[[list[torch.nn.Parameter]], Optimizer]): builds an
            optimizer over a list of parameters, e.g.
            ``partial(torch.optim.AdamW, lr=3e-4, fused=True)``.

    Raises:
        ValueError: if no parameter requires grad.

    Example:
        >>> opt = OptimizerInBackward(model.named_parameters(), partial(torch.optim.AdamW, lr=1e-3))
        >>> loss.backward()  # from the second step on, every parameter is updated here
        >>> opt.step()  # the first update; afterwards a no-op
    """

    def __init__(
        self,
        named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
        build_optimizer: Callable[[list[torch.nn.Parameter]], Optimizer],
    ) -> None:
        self.optimizers: dict[str, Optimizer] = {}
        self._params: dict[str, torch.nn.Parameter] = {}
        self._state_allocated = False
        self._hook_handles = []
        for name, param in named_parameters:
            if not param.requires_grad:
                continue
            optimizer = build_optimizer([param])
            self.optimizers[name] = optimizer
            self._params[name] = param
            self._hook_handles.append(param.register_post_accumulate_grad_hook(self._step_hook(optimizer)))
        if not self.optimizers:
            raise ValueError("OptimizerInBackward: no parameter requires grad")
        self.lead = next(iter(self.optimizers.values()))

    def _step_hook(self, optimizer: Optimizer) -> Callable[[torch.Tensor], None]:
        def step(param: torch.Tensor) -> None:
            if self._state_allocated:
                self._step_one(optimizer)

        return step

    def _step_one(self, optimizer: Optimizer) -> None:
        lead_group = self.lead.param_groups[0]
        for group in optimizer.param_groups:
            group.update({k: v for k, v in lead_group.items() if k not in _OWN_GROUP_KEYS})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The lead's groups: what a scheduler sets and what a logger reads."""
        return self.lead.param_groups

    def step(self) -> None:
        """Update the parameters whose gradients backward left (only on the first step)."""
        for name, optimizer in self.optimizers.items():
            if self._params[name].grad is not None:
                self._step_one(optimizer)
        self._state_allocated = True

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing to do: each gradient was dropped right after its step."""

    def remove_hooks(self) -> None:
        """Detach from the parameters, so that a later backward updates nothing."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles.clear()

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Every parameter's optimizer state, keyed by parameter name."""
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, dict[str, Any]]) -> None:
        """Restore every parameter's optimizer state from :meth:`state_dict`'s output.

        Raises:
            ValueError: if ``state_dict`` is one optimizer's state (written without
                optimizer in backward), or its parameter names differ from the model's.
        """
        if "state" in state_dict and "param_groups" in state_dict:
            raise UserValueError(
                "optimizer state: saved by a single optimizer (optimizer_in_bwd=False); "
                "resume with optimizer_in_bwd=False"
            )
        missing = sorted(set(self.optimizers) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(self.optimizers))
        if missing or unexpected:
            raise UserValueError(
                f"optimizer state: parameter names differ from the model's "
                f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state_dict[name])
        self._state_allocated = True
