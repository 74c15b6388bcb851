"""Key maps of a reward / value model: a Llama-style decoder with a classification head, as
transformers' ``{Llama,Mistral}ForSequenceClassification`` stores it (``model.*`` names as
the causal LM's, the head as ``score.weight``; no ``lm_head``). ``ModelType.REWARD`` in the
checkpointers, torchtune 0.6.1's ``reward_hf_to_tune`` / ``reward_tune_to_hf``.
"""

from typing import Dict, Optional

import torch

from torchtune.models._convert_weights import (
    check_internal_keys,
    hf_to_tune_keys,
    LLAMA_FROM_HF,
    refuse_meta,
    tune_to_hf_keys,
    tune_to_peft_adapter_config,
    tune_to_peft_adapter_weights,
)

__all__ = [
    "meta_to_tune",
    "tune_to_meta",
    "hf_to_tune",
    "tune_to_hf",
    "reward_hf_to_tune",
    "reward_tune_to_hf",
    "tune_to_peft_adapter_weights",
    "tune_to_peft_adapter_config",
]

_FAMILY = "reward model"
REWARD_FROM_HF = {
    **{k: v for k, v in LLAMA_FROM_HF.items() if k != "lm_head.weight"},
    "score.weight": "output.weight",
}
# transformers' classifiers have no score bias; 0.6.1 dropped one if a file had it (the
# shared map drops rotary_emb buffers itself).
_SCORE_BIAS = "score.bias"


def meta_to_tune(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Refused: reward models exist only in transformers' layout."""
    refuse_meta(_FAMILY)


def tune_to_meta(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A key check only: every key must be an internal reward-model name."""
    return check_internal_keys(state_dict, REWARD_FROM_HF, _FAMILY)


def hf_to_tune(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 32,
               dim: int = 4096, head_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """transformers' classifier -> internal (``score.weight`` -> ``output.weight``, q/k rows
    un-permuted as for the causal LM)."""
    state_dict = {k: v for k, v in state_dict.items() if k != _SCORE_BIAS}
    return hf_to_tune_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, REWARD_FROM_HF, _FAMILY)


def tune_to_hf(state_dict: Dict[str, torch.Tensor], num_heads: int = 32, num_kv_heads: int = 32,
               dim: int = 4096, head_dim: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Internal -> transformers' classifier names (inverse of ``hf_to_tune``)."""
    return tune_to_hf_keys(state_dict, num_heads, num_kv_heads, dim, head_dim, REWARD_FROM_HF, _FAMILY)


reward_hf_to_tune = hf_to_tune
reward_tune_to_hf = tune_to_hf
