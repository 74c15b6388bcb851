"""Preference losses over summed per-sequence log-probabilities.

Every loss takes the policy's (and, except SimPO, the reference's) log-probabilities of the
chosen and rejected answers, each ``[b]``, and returns ``(losses [b], chosen_rewards [b],
rejected_rewards [b])``: the per-pair loss (the recipe reduces it) and the implicit rewards
that TRL logs, detached. Length-normalised losses (IPO, SimPO) also need the number of
answer tokens of each sequence, which the recipes always pass.

The formulas follow the papers and TRL's implementation (``DPOTrainer._compute_loss`` and,
for SimPO, ``CPOTrainer.cpo_loss`` in trl 1.x); ``tests/torchtune/rlhf`` checks each loss and
its gradient against TRL.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def _logratio_margin(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    reference_chosen_logps: Tensor,
    reference_rejected_logps: Tensor,
) -> Tensor:
    """h = (log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))."""
    return (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps
    )


def _smoothed_sigmoid_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    # Conservative DPO (Mitchell, "A note on DPO with noisy preferences", 2023): the
    # preference label is flipped with probability label_smoothing.
    return -F.logsigmoid(logits) * (1 - label_smoothing) - F.logsigmoid(-logits) * label_smoothing


def _need_lengths(name: str, *lengths: Optional[Tensor]) -> None:
    if any(n is None for n in lengths):
        raise ValueError(f"{name} normalises by answer length: pass chosen_num_tokens and rejected_num_tokens")


class DPOLoss(nn.Module):
    """Direct Preference Optimization (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290,
    eq. 7), with optional label smoothing (conservative DPO)::

        h    = (log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))
        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)
        reward(y) = beta * (log pi(y|x) - log ref(y|x))

    With eps = 0 this is TRL's ``loss_type="sigmoid"``.

    Args:
        beta (float): inverse temperature of the implicit reward (0.1 to 0.5 usually); the
            smaller, the less the policy is held to the reference.
        label_smoothing (float): eps, the assumed probability that a label is flipped, in [0, 0.5).
    """

    uses_reference = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta = beta
        self.label_smoothing = label_smoothing

    def forward(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
        chosen_num_tokens: Optional[Tensor] = None,
        rejected_num_tokens: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            policy_chosen_logps (Tensor): [b] summed log-probabilities of the chosen answers.
            policy_rejected_logps (Tensor): [b] the same for the rejected answers.
            reference_chosen_logps (Tensor): [b] the reference model's, chosen.
            reference_rejected_logps (Tensor): [b] the reference model's, rejected.
            chosen_num_tokens (Optional[Tensor]): unused (length-normalised losses need it).
            rejected_num_tokens (Optional[Tensor]): unused.

        Returns:
            tuple[Tensor, Tensor, Tensor]: losses, chosen rewards, rejected rewards, each [b].
        """
        h = _logratio_margin(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
        )
        losses = _smoothed_sigmoid_loss(self.beta * h, self.label_smoothing)
        chosen_rewards = self.beta * (policy_chosen_logps - reference_chosen_logps).detach()
        rejected_rewards = self.beta * (policy_rejected_logps - reference_rejected_logps).detach()
        return losses, chosen_rewards, rejected_rewards


class IPOLoss(nn.Module):
    """Identity Preference Optimization (Azar et al. 2023, https://arxiv.org/abs/2310.12036,
    eq. 17), in the length-normalised form TRL uses (``loss_type="ipo"``; the authors'
    experiments average log-ratios over the answer tokens)::

        h    = (log pi(y_c) - log ref(y_c)) / |y_c| - (log pi(y_r) - log ref(y_r)) / |y_r|
        loss = (h - 1 / (2 * tau)) ** 2
        reward(y) = tau * (log pi(y|x) - log ref(y|x))      (as TRL logs it)

    Args:
        tau (float): the regulariser; the target log-ratio gap is 1 / (2 tau).
    """

    uses_reference = True

    def __init__(self, tau: float = 0.1):
        super().__init__()
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.tau = tau

    def forward(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
        chosen_num_tokens: Optional[Tensor] = None,
        rejected_num_tokens: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Arguments as ``DPOLoss.forward``; ``chosen_num_tokens`` / ``rejected_num_tokens``
        ([b], the answer-token counts) are required."""
        _need_lengths("IPOLoss", chosen_num_tokens, rejected_num_tokens)
        chosen_logratios = policy_chosen_logps - reference_chosen_logps
        rejected_logratios = policy_rejected_logps - reference_rejected_logps
        h = chosen_logratios / chosen_num_tokens.clamp(min=1) - rejected_logratios / rejected_num_tokens.clamp(min=1)
        losses = (h - 1 / (2 * self.tau)) ** 2
        return losses, self.tau * chosen_logratios.detach(), self.tau * rejected_logratios.detach()


class SimPOLoss(nn.Module):
    """Simple Preference Optimization (Meng et al. 2024, https://arxiv.org/abs/2405.14734,
    eq. 6): reference-free, with the average log-probability per answer token as the
    implicit reward and a target margin gamma; label smoothing as in DPO. TRL's
    ``CPOTrainer`` with ``loss_type="simpo"``::

        h    = log pi(y_c) / |y_c| - log pi(y_r) / |y_r|
        loss = -(1 - eps) * log sigmoid(beta * h - gamma) - eps * log sigmoid(gamma - beta * h)
        reward(y) = beta * log pi(y|x) / |y|

    Args:
        beta (float): reward scale (the paper uses 2.0 to 2.5).
        gamma (float): target reward margin (TRL's ``simpo_gamma``).
        label_smoothing (float): as in ``DPOLoss``.
    """

    uses_reference = False  # the recipes skip the reference forward

    def __init__(self, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0):
        super().__init__()
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
        self.beta = beta
        self.gamma = gamma
        self.label_smoothing = label_smoothing

    def forward(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Optional[Tensor] = None,
        reference_rejected_logps: Optional[Tensor] = None,
        chosen_num_tokens: Optional[Tensor] = None,
        rejected_num_tokens: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Arguments as ``DPOLoss.forward``; the reference log-probabilities are ignored and
        the answer-token counts are required."""
        _need_lengths("SimPOLoss", chosen_num_tokens, rejected_num_tokens)
        chosen_avg = policy_chosen_logps / chosen_num_tokens.clamp(min=1)
        rejected_avg = policy_rejected_logps / rejected_num_tokens.clamp(min=1)
        logits = self.beta * (chosen_avg - rejected_avg) - self.gamma
        losses = _smoothed_sigmoid_loss(logits, self.label_smoothing)
        return losses, self.beta * chosen_avg.detach(), self.beta * rejected_avg.detach()


class RSOLoss(nn.Module):
    """Statistical Rejection Sampling Optimization's hinge loss (Liu et al. 2023,
    https://arxiv.org/abs/2309.06657; SLiC's calibration loss on DPO's log-ratios). TRL's
    ``loss_type="hinge"``::

        loss = max(0, 1 - gamma * h)        (h as in DPOLoss)
        reward(y) = gamma * (log pi(y|x) - log ref(y|x))

    Args:
        gamma (float): scale of the log-ratio margin (DPO's beta).
    """

    uses_reference = True

    def __init__(self, gamma: float = 0.1):
        super().__init__()
        self.gamma = gamma

    def forward(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        reference_chosen_logps: Tensor,
        reference_rejected_logps: Tensor,
        chosen_num_tokens: Optional[Tensor] = None,
        rejected_num_tokens: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Arguments as ``DPOLoss.forward``."""
        h = _logratio_margin(
            policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
        )
        losses = torch.relu(1 - self.gamma * h)
        chosen_rewards = self.gamma * (policy_chosen_logps - reference_chosen_logps).detach()
        rejected_rewards = self.gamma * (policy_rejected_logps - reference_rejected_logps).detach()
        return losses, chosen_rewards, rejected_rewards
