"""torchtune 0.6.1's ``torchtune.rlhf.utils``: the reward model's key maps."""

from torchtune.rlhf.utils._convert_weights import reward_hf_to_tune, reward_tune_to_hf

__all__ = ["reward_hf_to_tune", "reward_tune_to_hf"]
