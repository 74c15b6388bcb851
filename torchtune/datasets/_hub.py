"""Builders for named Hub datasets that torchtune 0.6.1 shipped: SlimOrca (ShareGPT
conversations), SAMSum and the C4-200M grammar set (input/output pairs).

Each has 0.6.1's name, signature and defaults (its ``source`` default is the Hub id; a
local copy loads with ``source="json", data_files=PATH``) and formats its records as
``chat_dataset`` does: the tokenizer's ``tokenize_messages`` if it has one, else
``Llama2ChatFormat``. ``max_seq_len`` None means ``tokenizer.max_seq_len`` (no limit if
unset); ``max_seq_len``, ``num_proc`` and ``chat_format`` are this library's additions.
"""

from typing import Callable, Dict, Optional, Tuple, Union

from torchtune._errors import UserValueError
from torchtune.datasets._chat import messages_dataset, ToMessages
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import TokenizedDataset
from torchtune.tokenizers import Tokenizer


def _columns(
    builder: str, column_map: Optional[Dict[str, str]], defaults: Dict[str, str]
) -> Dict[str, str]:
    """``defaults`` updated by ``column_map``, whose keys must be among the defaults'."""
    column_map = dict(column_map or {})
    for key in column_map:
        if key not in defaults:
            raise UserValueError(
                f"{builder}: column_map key {key!r} is not one of {', '.join(defaults)}"
            )
    return {**defaults, **column_map}


def slimorca_dataset(
    tokenizer: Tokenizer,
    *,
    source: str = "Open-Orca/SlimOrca-Dedup",
    column_map: Optional[Dict[str, str]] = None,
    train_on_input: bool = False,
    new_system_prompt: Optional[str] = None,
    packed: bool = False,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    max_seq_len: Optional[int] = None,
    num_proc: int = 1,
    chat_format: Optional[str] = None,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """SlimOrca-Dedup: ShareGPT-style conversations (``{"from", "value"}`` turns in the
    "conversations" column); only the assistant ("gpt") turns are learned unless
    ``train_on_input``.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or "json" with ``data_files``.
        column_map (Optional[Dict[str, str]]): {"conversations": the dataset's column}.
        train_on_input (bool): also learn the system and human turns.
        new_system_prompt (Optional[str]): a system turn replacing the records' own.
        packed (bool): pack into rows of ``max_seq_len`` (or the tokenizer's).
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it.
        max_seq_len (Optional[int]): truncation length; None: ``tokenizer.max_seq_len``.
        num_proc (int): processes for tokenizing.
        chat_format (Optional[str]): as in ``chat_dataset``.
        **load_dataset_kwargs: passed to ``datasets.load_dataset``.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    columns = _columns("slimorca_dataset", column_map, {"conversations": "conversations"})
    to_messages = ToMessages("sharegpt", columns, train_on_input, new_system_prompt)
    return messages_dataset(
        f"slimorca_dataset({source!r})", tokenizer, source, to_messages,
        chat_format=chat_format, max_seq_len=max_seq_len, packed=packed, num_proc=num_proc,
        filter_fn=filter_fn, split=split, **load_dataset_kwargs,
    )


def _input_output_dataset(
    builder: str,
    defaults: Tuple[str, str],
    tokenizer: Tokenizer,
    source: str,
    column_map: Optional[Dict[str, str]],
    train_on_input: bool,
    new_system_prompt: Optional[str],
    **kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    columns = _columns(builder, column_map, {"input": defaults[0], "output": defaults[1]})
    to_messages = ToMessages("input_output", columns, train_on_input, new_system_prompt)
    return messages_dataset(
        f"{builder}({source!r})", tokenizer, source, to_messages, what_fills="the prompts",
        **kwargs,
    )


def samsum_dataset(
    tokenizer: Tokenizer,
    *,
    source: str = "Samsung/samsum",
    column_map: Optional[Dict[str, str]] = None,
    train_on_input: bool = False,
    new_system_prompt: Optional[str] = None,
    packed: bool = False,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    max_seq_len: Optional[int] = None,
    num_proc: int = 1,
    chat_format: Optional[str] = None,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """SAMSum dialogue summarization: the "dialogue" column is the user turn, the
    "summary" column the assistant turn (the one learned).

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or "json" with ``data_files``.
        column_map (Optional[Dict[str, str]]): "input" and/or "output" -> the dataset's
            column (defaults "dialogue" and "summary").
        train_on_input (bool): also learn the dialogue.
        new_system_prompt (Optional[str]): a system turn put first (never learned).
        packed (bool): pack into rows of ``max_seq_len`` (or the tokenizer's).
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it.
        max_seq_len (Optional[int]): truncation length; None: ``tokenizer.max_seq_len``.
        num_proc (int): processes for tokenizing.
        chat_format (Optional[str]): as in ``chat_dataset``.
        **load_dataset_kwargs: passed to ``datasets.load_dataset``.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    return _input_output_dataset(
        "samsum_dataset", ("dialogue", "summary"), tokenizer, source, column_map,
        train_on_input, new_system_prompt, packed=packed, filter_fn=filter_fn, split=split,
        max_seq_len=max_seq_len, num_proc=num_proc, chat_format=chat_format,
        **load_dataset_kwargs,
    )


def grammar_dataset(
    tokenizer: Tokenizer,
    *,
    source: str = "liweili/c4_200m",
    column_map: Optional[Dict[str, str]] = None,
    train_on_input: bool = False,
    new_system_prompt: Optional[str] = None,
    packed: bool = False,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    max_seq_len: Optional[int] = None,
    num_proc: int = 1,
    chat_format: Optional[str] = None,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Grammar correction (C4-200M): the "input" column (a sentence with errors) is the
    user turn, the "output" column (corrected) the assistant turn (the one learned).

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or "json" with ``data_files``.
        column_map (Optional[Dict[str, str]]): "input" and/or "output" -> the dataset's
            column.
        train_on_input (bool): also learn the input sentence.
        new_system_prompt (Optional[str]): a system turn put first (never learned).
        packed (bool): pack into rows of ``max_seq_len`` (or the tokenizer's).
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it.
        max_seq_len (Optional[int]): truncation length; None: ``tokenizer.max_seq_len``.
        num_proc (int): processes for tokenizing.
        chat_format (Optional[str]): as in ``chat_dataset``.
        **load_dataset_kwargs: passed to ``datasets.load_dataset``.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    return _input_output_dataset(
        "grammar_dataset", ("input", "output"), tokenizer, source, column_map,
        train_on_input, new_system_prompt, packed=packed, filter_fn=filter_fn, split=split,
        max_seq_len=max_seq_len, num_proc=num_proc, chat_format=chat_format,
        **load_dataset_kwargs,
    )
