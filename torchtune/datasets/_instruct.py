from typing import Callable, Dict, List, Mapping, Optional, Tuple, Type, Union

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, InstructTemplate
from torchtune.datasets._chat import messages_dataset, ToMessages
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import (
    check_columns,
    load_hf_dataset,
    not_text,
    pack_length,
    resolve_class,
    resolve_max_seq_len,
    tokenize,
    TokenizedDataset,
    truncate,
)
from torchtune.tokenizers import encode_truncated, Tokenizer


class _InstructTransform:
    """Batched ``map`` function: record -> prompt + response ids and labels.

    The prompt is encoded with BOS, the response with EOS and without SentencePiece's
    dummy-prefix space (``trim_leading_whitespace``), so that for a template ending in a
    newline (as Alpaca's does) the ids equal those of the whole text encoded at once.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: Type[InstructTemplate],
        columns: Dict[str, str],
        train_on_input: bool,
        max_seq_len: Optional[int],
    ):
        self.tokenizer = tokenizer
        self.template = template
        self.columns = columns  # template key -> dataset column, for columns present
        self.train_on_input = train_on_input
        self.max_seq_len = max_seq_len

    def _encode(self, prompt: str, response: str) -> Tuple[List[int], List[int]]:
        """Prompt ids (with BOS) and response ids (with EOS), only as many as ``truncate``
        looks at.

        ``truncate`` keeps the first ``max_seq_len`` ids of prompt + response and needs
        to know only whether there are more. So the first ``max_seq_len + 1`` ids of the
        concatenation give it exactly what the whole would: the prompt's first
        ``max_seq_len + 1`` ids, then as many of the response's as are left (none when
        the prompt alone fills them, and then the response is not encoded at all).
        """
        budget = None if self.max_seq_len is None else self.max_seq_len + 1
        prompt_ids = encode_truncated(self.tokenizer, prompt, budget, add_bos=True, add_eos=False)
        if budget is not None:
            budget -= len(prompt_ids)
        response_ids = encode_truncated(
            self.tokenizer, response, budget,
            add_bos=False, add_eos=True, trim_leading_whitespace=True,
        )
        return prompt_ids, response_ids

    def __call__(self, batch: Mapping[str, list], indices: List[int]) -> Dict[str, list]:
        out: Dict[str, list] = {"tokens": [], "labels": [], "truncated": []}
        for j, row in enumerate(indices):
            sample = {}
            for key, column in self.columns.items():
                value = batch[column][j]
                if not isinstance(value, str):
                    raise UserValueError(f"row {row}: column {column!r} is {not_text(value)}")
                sample[key] = value
            prompt, response = self._encode(self.template.format(sample), sample["output"])
            if self.train_on_input:
                prompt_labels = prompt
            else:
                prompt_labels = [CROSS_ENTROPY_IGNORE_IDX] * len(prompt)
            tokens, labels, cut = truncate(
                prompt + response,
                prompt_labels + response,
                self.max_seq_len,
                self.tokenizer.eos_id,
            )
            out["tokens"].append(tokens)
            out["labels"].append(labels)
            out["truncated"].append(cut)
        return out


# 0.6.1's instruct_dataset reads these columns (InputOutputToMessages)
_INPUT_OUTPUT = ("input", "output")


def instruct_dataset(
    tokenizer: Tokenizer,
    source: Optional[str] = None,
    template: Optional[Union[str, Type[InstructTemplate]]] = None,
    column_map: Optional[Dict[str, str]] = None,
    train_on_input: Optional[bool] = None,
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    num_proc: int = 1,
    *,
    new_system_prompt: Optional[str] = None,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Instruction data: a prompt and its response per record.

    Two ways to build the prompt:

    - With a ``template`` (this library's way): the prompt is the template's text built
      from the record's columns, the response is the "output" column, and each sample is
      ``BOS + prompt + response + EOS``, encoded as plain text (no chat format).
      ``train_on_input`` defaults to True. ``new_system_prompt`` is not used.
    - Without one (torchtune 0.6.1's ``instruct_dataset``): the record is a conversation
      of a user turn (the "input" column) and an assistant turn (the "output" column),
      after a system turn when ``new_system_prompt`` is given, formatted as
      ``chat_dataset`` formats conversations (the tokenizer's ``tokenize_messages`` if it
      has one, else ``Llama2ChatFormat``). ``train_on_input`` defaults to False, as in
      0.6.1; the system turn is never learned.

    With ``train_on_input=False`` the prompt's labels (BOS included) are the ignore index,
    so only the response (and EOS) is learned. Samples longer than ``max_seq_len`` are
    truncated to exactly ``max_seq_len`` tokens keeping EOS last (see ``truncate``), and
    the number truncated is logged; only as much of a long record as the sample keeps is
    encoded (``encode_truncated``), so a huge record costs memory in proportion to
    ``max_seq_len``. If no sample has a target left within ``max_seq_len`` (every prompt
    fills it and ``train_on_input=False``) the build fails; if some have none, their
    number is logged.

    torchtune 0.6.1's signature ``instruct_dataset(tokenizer, *, source, column_map=None,
    train_on_input=False, new_system_prompt=None, packed=False, filter_fn=None,
    split="train", **load_dataset_kwargs)`` works unchanged and means what it meant:
    ``column_map`` renames "input"/"output", ``filter_fn`` drops records before
    tokenizing, ``split`` may slice ("train[:10%]"), and the tokenizer's ``max_seq_len``
    truncates and is the packed row length. ``template``, ``max_seq_len`` and
    ``num_proc`` are this library's additions; ``max_seq_len`` wins over the tokenizer's.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (Optional[str]): Hub dataset name, or a loader ("json", "csv", "parquet"
            ...) with ``data_files`` in ``load_dataset_kwargs``; required.
        template (Optional[Union[str, Type[InstructTemplate]]]): a template class or its
            dotted path; None for 0.6.1's user/assistant conversation.
        column_map (Optional[Dict[str, str]]): expected column -> dataset column. With a
            template the keys are its columns and "output" (e.g.
            ``{"instruction": "prompt", "output": "completion"}``); without one, "input"
            and "output" (e.g. ``{"input": "question", "output": "answer"}``).
        train_on_input (Optional[bool]): also learn the prompt tokens; None means True
            with a template and False without (0.6.1's default).
        max_seq_len (Optional[int]): truncate samples to this many tokens; None:
            ``tokenizer.max_seq_len`` if set, else no limit. Required (here or on the
            tokenizer) when ``packed``.
        packed (bool): pack samples into rows of exactly ``max_seq_len`` (``PackedDataset``).
        num_proc (int): processes for tokenizing with ``datasets.Dataset.map``.
        new_system_prompt (Optional[str]): without a template, a system turn put first.
        filter_fn (Optional[Callable]): keep the records for which it returns True
            (``datasets.Dataset.filter``), before tokenizing.
        split (str): the split to load, or a slice of it ("train[:100]").
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (``data_files``,
            ``name``, ``cache_dir`` ...).

    Returns:
        Union[TokenizedDataset, PackedDataset]: map-style items as in docs/design.md.

    Raises:
        UserValueError: for a missing ``source``, an unknown template, a ``column_map``
            key that is not an expected column or a column the dataset lacks, an unknown
            split, an empty dataset, a record with a missing column (naming its row
            index), samples with no target at all, ``new_system_prompt`` with a template,
            or ``packed`` without a row length; see also ``load_hf_dataset``.
    """
    name = f"instruct_dataset({source!r})"
    column_map = dict(column_map or {})
    if template is None:
        for key in column_map:
            if key not in _INPUT_OUTPUT:
                raise UserValueError(
                    f"column_map key {key!r} is not a column instruct_dataset reads without "
                    "a template (input, output)"
                )
        to_messages = ToMessages(
            "input_output",
            {k: column_map.get(k, k) for k in _INPUT_OUTPUT},
            bool(train_on_input),
            new_system_prompt,
        )
        return messages_dataset(
            name, tokenizer, source, to_messages, max_seq_len=max_seq_len, packed=packed,
            num_proc=num_proc, filter_fn=filter_fn, split=split, what_fills="the prompts",
            **load_dataset_kwargs,
        )

    template = resolve_class(template, "template")
    if new_system_prompt is not None:
        raise UserValueError(
            "instruct_dataset: new_system_prompt needs template=None (a template builds "
            "the whole prompt)"
        )
    train_on_input = True if train_on_input is None else train_on_input
    max_seq_len = resolve_max_seq_len(tokenizer, max_seq_len)
    if packed:
        pack_length(name, max_seq_len)
    known = (*template.required_columns, *template.optional_columns, "output")
    for key in column_map:
        if key not in known:
            raise UserValueError(
                f"column_map key {key!r} is not a column {template.__name__} uses "
                f"({', '.join(known)})"
            )
    ds = load_hf_dataset(source, split=split, filter_fn=filter_fn, **load_dataset_kwargs)
    required = [*template.required_columns, "output"]
    check_columns(ds, [column_map.get(k, k) for k in required], source)
    for key, column in column_map.items():
        if column not in ds.column_names:
            raise UserValueError(
                f"column_map maps {key!r} to {column!r}, but dataset {source!r} has no such "
                f"column (its columns: {', '.join(ds.column_names)})"
            )
    columns = {k: column_map.get(k, k) for k in required}
    for key in template.optional_columns:
        if column_map.get(key, key) in ds.column_names:
            columns[key] = column_map.get(key, key)
    transform = _InstructTransform(tokenizer, template, columns, train_on_input, max_seq_len)
    remedy = "raise max_seq_len" if train_on_input else (
        "raise max_seq_len (the prompts fill it), or set train_on_input=True to learn the "
        "prompts too"
    )
    tokenized = tokenize(
        ds, transform, name=name, max_seq_len=max_seq_len, num_proc=num_proc, remedy=remedy
    )
    if packed:
        return PackedDataset(tokenized, max_seq_len, padding_idx=tokenizer.pad_id)
    return tokenized
