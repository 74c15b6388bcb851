"""Preference fine-tuning (DPO and relatives): per-sequence log-probabilities, the LoRA
reference model, cached reference log-probabilities and the losses
(``torchtune.rlhf.loss``)."""

from torchtune.rlhf import loss
from torchtune.rlhf._adapters import disable_adapters
from torchtune.rlhf._log_probs import get_batch_log_probs, sequence_ids
from torchtune.rlhf._reference import ReferenceLogProbsDataset

__all__ = ["ReferenceLogProbsDataset", "disable_adapters", "get_batch_log_probs", "loss", "sequence_ids"]
