from typing import Callable, Dict, Optional, Union

from torchtune.data import AlpacaInstructTemplate
from torchtune.datasets._instruct import instruct_dataset
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import resolve_max_seq_len, TokenizedDataset
from torchtune.tokenizers import Tokenizer

# the packed row length when neither the builder nor the tokenizer gives one (the seed's
# default; torchtune 0.6.1 raised instead)
_DEFAULT_PACKED_LEN = 512


def alpaca_dataset(
    tokenizer: Tokenizer,
    source: str = "tatsu-lab/alpaca",
    train_on_input: bool = True,
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    num_proc: int = 1,
    *,
    column_map: Optional[Dict[str, str]] = None,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Stanford Alpaca (52k instruction/input/output records) with the original prompt
    (``AlpacaInstructTemplate``).

    Each sample is ``BOS + prompt + output + EOS``; with ``train_on_input=False`` only
    the output and EOS are learned. Read a local copy with
    ``source="json", data_files="alpaca_data.json"``.

    torchtune 0.6.1's signature ``alpaca_dataset(tokenizer, *, source="tatsu-lab/alpaca",
    column_map=None, train_on_input=True, packed=False, filter_fn=None, split="train",
    **load_dataset_kwargs)`` works unchanged: ``column_map`` renames "instruction",
    "input" and "output", ``filter_fn`` drops records before tokenizing, ``split`` may
    slice, and the tokenizer's ``max_seq_len`` truncates (to exactly that many tokens,
    EOS last) and is the packed row length. One difference: the prompt is encoded as
    plain text, while 0.6.1 passed it as a user message through the tokenizer's chat
    format or prompt template.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or "json" with ``data_files``.
        train_on_input (bool): also learn the prompt tokens.
        max_seq_len (Optional[int]): truncate samples to this length (and the packed row
            length); None: ``tokenizer.max_seq_len`` if set, else no limit (and rows of
            512 tokens when packed).
        packed (bool): pack samples into rows of exactly ``max_seq_len``.
        num_proc (int): processes for tokenizing.
        column_map (Optional[Dict[str, str]]): "instruction", "input" or "output" ->
            the dataset's column.
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it ("train[:10%]").
        **load_dataset_kwargs: passed to ``datasets.load_dataset``.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.

    Example:
        >>> ds = alpaca_dataset(tok, source="json", data_files="tests/assets/alpaca_1000.json")
        >>> ds[0]["tokens"][:3]
        [1, 13866, 338]
    """
    max_seq_len = resolve_max_seq_len(tokenizer, max_seq_len)
    if packed and max_seq_len is None:
        max_seq_len = _DEFAULT_PACKED_LEN
    return instruct_dataset(
        tokenizer,
        source,
        AlpacaInstructTemplate,
        column_map=column_map,
        train_on_input=train_on_input,
        max_seq_len=max_seq_len,
        packed=packed,
        num_proc=num_proc,
        filter_fn=filter_fn,
        split=split,
        **load_dataset_kwargs,
    )


def alpaca_cleaned_dataset(
    tokenizer: Tokenizer,
    source: str = "yahma/alpaca-cleaned",
    train_on_input: bool = True,
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    num_proc: int = 1,
    **kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """The cleaned Alpaca data (gururise/AlpacaDataCleaned, ``yahma/alpaca-cleaned``);
    takes every argument of ``alpaca_dataset`` (0.6.1's included) and means the same."""
    return alpaca_dataset(
        tokenizer,
        source,
        train_on_input=train_on_input,
        max_seq_len=max_seq_len,
        packed=packed,
        num_proc=num_proc,
        **kwargs,
    )
