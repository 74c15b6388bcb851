import importlib
from typing import Dict, List, Mapping, Optional, Tuple, Type, Union

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, InstructTemplate
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import (
    check_columns,
    load_hf_dataset,
    tokenize,
    TokenizedDataset,
    truncate,
)
from torchtune.tokenizers import encode_truncated, Tokenizer


def resolve_class(obj: Union[str, type], what: str) -> type:
    """Return ``obj`` itself, or the class a dotted path such as
    "torchtune.data.AlpacaInstructTemplate" names."""
    if not isinstance(obj, str):
        return obj
    module_name, _, attr = obj.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserValueError(f"{what} {obj!r} is not an importable dotted path ({e})") from None


def _not_text(value) -> str:
    return "missing" if value is None else f"of type {type(value).__name__}, not text"


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
                    raise UserValueError(f"row {row}: column {column!r} is {_not_text(value)}")
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


def instruct_dataset(
    tokenizer: Tokenizer,
    source: str,
    template: Union[str, Type[InstructTemplate]],
    column_map: Optional[Dict[str, str]] = None,
    train_on_input: bool = True,
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    num_proc: int = 1,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Instruction data: a prompt built by ``template`` from each record, then its response.

    Each sample is ``BOS + prompt + response + EOS``. With ``train_on_input=False`` the
    prompt's labels (BOS included) are the ignore index, so only the response (and EOS)
    is learned. Samples longer than ``max_seq_len`` are truncated keeping EOS last (see
    ``truncate``), and the number truncated is logged; only as much of a long record as
    the sample keeps is encoded (``encode_truncated``), so a huge record costs memory in
    proportion to ``max_seq_len``. If no sample has a target left within ``max_seq_len``
    (every prompt fills it and ``train_on_input=False``) the build fails; if some have
    none, their number is logged.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or a loader ("json", "csv", "parquet" ...) with
            ``data_files`` in ``load_dataset_kwargs``.
        template (Union[str, Type[InstructTemplate]]): a template class or its dotted path.
        column_map (Optional[Dict[str, str]]): template column -> dataset column, e.g.
            ``{"instruction": "prompt", "output": "completion"}``. The response column is
            "output".
        train_on_input (bool): also learn the prompt tokens.
        max_seq_len (Optional[int]): truncate samples to this many tokens; required when
            ``packed``.
        packed (bool): pack samples into rows of exactly ``max_seq_len`` (``PackedDataset``).
        num_proc (int): processes for tokenizing with ``datasets.Dataset.map``.
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (``data_files``,
            ``cache_dir``, ``split`` ...).

    Returns:
        Union[TokenizedDataset, PackedDataset]: map-style items as in docs/design.md.

    Raises:
        UserValueError: for an unknown template, a ``column_map`` key the template does
            not use or a column the dataset lacks, an empty dataset, a record with a
            missing column (naming its row index), or samples with no target at all; see
            also ``load_hf_dataset``.
    """
    template = resolve_class(template, "template")
    if packed and max_seq_len is None:
        raise UserValueError("packed=True needs max_seq_len")
    known = (*template.required_columns, *template.optional_columns, "output")
    column_map = dict(column_map or {})
    for key in column_map:
        if key not in known:
            raise UserValueError(
                f"column_map key {key!r} is not a column {template.__name__} uses "
                f"({', '.join(known)})"
            )
    ds = load_hf_dataset(source, **load_dataset_kwargs)
    name = f"instruct_dataset({source!r})"
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
