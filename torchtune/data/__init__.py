"""Prompt templates, chat formats, collate functions, the resumable sampler and constants."""

from torchtune.data._chat_formats import ChatFormat, Llama2ChatFormat, Message
from torchtune.data._collate import (
    block_causal_mask,
    packed_collate,
    padded_collate,
    padding_free_collate,
)
from torchtune.data._common import CROSS_ENTROPY_IGNORE_IDX
from torchtune.data._sampler import ResumableSampler
from torchtune.data._templates import AlpacaInstructTemplate, InstructTemplate

__all__ = [
    "AlpacaInstructTemplate",
    "CROSS_ENTROPY_IGNORE_IDX",
    "ChatFormat",
    "InstructTemplate",
    "Llama2ChatFormat",
    "Message",
    "ResumableSampler",
    "block_causal_mask",
    "packed_collate",
    "padded_collate",
    "padding_free_collate",
]

from torchtune.data._collate_dpo import padded_collate_dpo, padding_free_collate_dpo  # noqa: E402

__all__ += ["padded_collate_dpo", "padding_free_collate_dpo"]
