from typing import Union

from torchtune.data import AlpacaInstructTemplate
from torchtune.datasets._instruct import instruct_dataset
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import TokenizedDataset
from torchtune.tokenizers import Tokenizer


def alpaca_dataset(
    tokenizer: Tokenizer,
    source: str = "tatsu-lab/alpaca",
    train_on_input: bool = True,
    max_seq_len: int = 512,
    packed: bool = False,
    num_proc: int = 1,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Stanford Alpaca (52k instruction/input/output records) with the original prompt
    (``AlpacaInstructTemplate``).

    Each sample is ``BOS + prompt + output + EOS``; with ``train_on_input=False`` only
    the output and EOS are learned. Read a local copy with
    ``source="json", data_files="alpaca_data.json"``.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or "json" with ``data_files``.
        train_on_input (bool): also learn the prompt tokens.
        max_seq_len (int): truncate samples to this length (and the packed row length).
        packed (bool): pack samples into rows of exactly ``max_seq_len``.
        num_proc (int): processes for tokenizing.
        **load_dataset_kwargs: passed to ``datasets.load_dataset``.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.

    Example:
        >>> ds = alpaca_dataset(tok, source="json", data_files="tests/assets/alpaca_1000.json")
        >>> ds[0]["tokens"][:3]
        [1, 13866, 338]
    """
    return instruct_dataset(
        tokenizer,
        source,
        AlpacaInstructTemplate,
        train_on_input=train_on_input,
        max_seq_len=max_seq_len,
        packed=packed,
        num_proc=num_proc,
        **load_dataset_kwargs,
    )


def alpaca_cleaned_dataset(
    tokenizer: Tokenizer,
    source: str = "yahma/alpaca-cleaned",
    train_on_input: bool = True,
    max_seq_len: int = 512,
    packed: bool = False,
    num_proc: int = 1,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """The cleaned Alpaca data (gururise/AlpacaDataCleaned); see ``alpaca_dataset``."""
    return alpaca_dataset(
        tokenizer,
        source,
        train_on_input=train_on_input,
        max_seq_len=max_seq_len,
        packed=packed,
        num_proc=num_proc,
        **load_dataset_kwargs,
    )
