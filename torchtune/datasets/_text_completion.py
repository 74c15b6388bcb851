from typing import Dict, List, Mapping, Optional, Union

from torchtune._errors import UserValueError
from torchtune.datasets._instruct import _not_text
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import (
    check_columns,
    load_hf_dataset,
    tokenize,
    TokenizedDataset,
    truncate,
)
from torchtune.tokenizers import encode_truncated, Tokenizer


class _TextTransform:
    def __init__(
        self, tokenizer: Tokenizer, column: str, add_eos: bool, max_seq_len: Optional[int]
    ):
        self.tokenizer = tokenizer
        self.column = column
        self.add_eos = add_eos
        self.max_seq_len = max_seq_len

    def __call__(self, batch: Mapping[str, list], indices: List[int]) -> Dict[str, list]:
        out: Dict[str, list] = {"tokens": [], "labels": [], "truncated": []}
        eos = self.tokenizer.eos_id if self.add_eos else None
        for text, row in zip(batch[self.column], indices):
            if not isinstance(text, str):
                raise UserValueError(f"row {row}: column {self.column!r} is {_not_text(text)}")
            # truncate keeps max_seq_len ids and needs to know only whether there are more
            budget = None if self.max_seq_len is None else self.max_seq_len + 1
            tokens = encode_truncated(
                self.tokenizer, text, budget, add_bos=True, add_eos=self.add_eos
            )
            tokens, labels, cut = truncate(tokens, list(tokens), self.max_seq_len, eos)
            out["tokens"].append(tokens)
            out["labels"].append(labels)
            out["truncated"].append(cut)
        return out


def text_completion_dataset(
    tokenizer: Tokenizer,
    source: str,
    column: str = "text",
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    add_eos: bool = True,
    num_proc: int = 1,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Unstructured text for continued pretraining: every token is learned.

    Each record's ``column`` becomes ``BOS + text (+ EOS)``. Unpacked, samples longer than
    ``max_seq_len`` are truncated (keeping EOS last if ``add_eos``) and counted, and only
    the part of a long text that the sample keeps is encoded (``encode_truncated``), so a
    huge record costs memory in proportion to ``max_seq_len``. Packed, nothing is
    truncated: documents are split across rows (``split_across_pack=True``), so every
    token is kept and each text is encoded whole (a huge record costs memory in
    proportion to its length).
    For plain text files use ``source="text", data_files=PATH``: one record per line, or
    per blank-line separated paragraph with ``sample_by="paragraph"``, or the whole file
    with ``sample_by="document"``.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or a loader ("text", "json" ...) with ``data_files``.
        column (str): the text column.
        max_seq_len (Optional[int]): truncation length (unpacked) or row length (packed).
        packed (bool): pack into rows of exactly ``max_seq_len``.
        add_eos (bool): end each document with EOS.
        num_proc (int): processes for tokenizing.
        **load_dataset_kwargs: passed to ``datasets.load_dataset``.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    if packed and max_seq_len is None:
        raise UserValueError("packed=True needs max_seq_len")
    ds = load_hf_dataset(source, **load_dataset_kwargs)
    check_columns(ds, [column], source)
    limit = None if packed else max_seq_len
    transform = _TextTransform(tokenizer, column, add_eos, limit)
    name = f"text_completion_dataset({source!r})"
    # BOS + text (+ EOS) has a target unless it is cut to one token or is an empty text
    # without EOS
    remedy = "raise max_seq_len" if add_eos else "raise max_seq_len, or drop empty texts"
    tokenized = tokenize(
        ds, transform, name=name, max_seq_len=limit, num_proc=num_proc, remedy=remedy
    )
    if packed:
        return PackedDataset(
            tokenized, max_seq_len, padding_idx=tokenizer.pad_id, split_across_pack=True
        )
    return tokenized
