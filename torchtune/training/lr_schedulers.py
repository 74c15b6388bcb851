"""Learning-rate schedules, built as ``torch.optim.lr_scheduler.LambdaLR``."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from torchtune._errors import UserValueError


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    """Linear warmup from 0 to the optimizer's lr, then cosine decay.

    The multiplier at step ``t`` is ``t / max(1, num_warmup_steps)`` during warmup, and after it
    ``max(0, 0.5 * (1 + cos(pi * num_cycles * 2 * p)))`` with
    ``p = (t - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)``.
    With the default ``num_cycles=0.5`` the lr falls to 0 at ``num_training_steps``
    (the schedule of Hugging Face transformers and torchtune).

    Args:
        optimizer (Optimizer): the optimizer whose lr is scheduled.
        num_warmup_steps (int): steps of linear warmup.
        num_training_steps (int): total number of optimizer steps.
        num_cycles (float): number of cosine periods over the decay; 0.5 is a half cosine.
        last_epoch (int): index of the last step, for resuming; -1 starts fresh.

    Returns:
        LambdaLR: the scheduler; call ``.step()`` after each optimizer step.

    Raises:
        ValueError: if a step count is negative.
    """
    if num_warmup_steps < 0 or num_training_steps < 0:
        raise UserValueError(
            "num_warmup_steps and num_training_steps must be >= 0, got "
            f"{num_warmup_steps} and {num_training_steps}"
        )

    def lr_lambda(current_step: int) -> float:
        if current_step < num_warmup_steps:
            return current_step / max(1, num_warmup_steps)
        progress = (current_step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))

    return LambdaLR(optimizer, lr_lambda, last_epoch)
