"""Dataset builders (alpaca, instruct, chat, text completion) and packing.

Builders load with Hugging Face ``datasets`` (imported only when a builder runs) and
return map-style torch datasets whose items follow docs/design.md.
"""

from torchtune.datasets._alpaca import alpaca_cleaned_dataset, alpaca_dataset
from torchtune.datasets._chat import chat_dataset
from torchtune.datasets._concat import ConcatDataset
from torchtune.datasets._hub import grammar_dataset, samsum_dataset, slimorca_dataset
from torchtune.datasets._instruct import instruct_dataset
from torchtune.datasets._lengths import check_sample_lengths
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._text_completion import text_completion_dataset
from torchtune.datasets._text_completion import (
    cnn_dailymail_articles_dataset,
    wikitext_dataset,
)
from torchtune.datasets._tokenized import TokenizedDataset, truncate

__all__ = [
    "PackedDataset",
    "TokenizedDataset",
    "alpaca_cleaned_dataset",
    "alpaca_dataset",
    "chat_dataset",
    "check_sample_lengths",
    "instruct_dataset",
    "text_completion_dataset",
    "truncate",
    "ConcatDataset",
    "cnn_dailymail_articles_dataset",
    "grammar_dataset",
    "samsum_dataset",
    "slimorca_dataset",
    "wikitext_dataset",
]

from torchtune.datasets._preference import (  # noqa: E402
    PreferenceDataset,
    hh_rlhf_helpful_dataset,
    preference_dataset,
    stack_exchange_paired_dataset,
)

__all__ += ["PreferenceDataset", "hh_rlhf_helpful_dataset", "preference_dataset", "stack_exchange_paired_dataset"]
