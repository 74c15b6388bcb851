from typing import Callable, Dict, List, Mapping, Optional, Union

from torchtune._errors import UserValueError
from torchtune.datasets._tokenized import not_text as _not_text
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import (
    check_columns,
    load_hf_dataset,
    pack_length,
    resolve_max_seq_len,
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
    source: Optional[str] = None,
    column: str = "text",
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    add_eos: bool = True,
    num_proc: int = 1,
    *,
    split_across_pack: bool = True,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Unstructured text for continued pretraining: every token is learned.

    Each record's ``column`` becomes ``BOS + text (+ EOS)``. Unpacked, samples longer than
    ``max_seq_len`` are truncated to exactly ``max_seq_len`` tokens (keeping EOS last if
    ``add_eos``) and counted, and only the part of a long text that the sample keeps is
    encoded (``encode_truncated``), so a huge record costs memory in proportion to
    ``max_seq_len``. Packed with ``split_across_pack`` (the default), nothing is
    truncated: documents are split across rows, so every token is kept and each text is
    encoded whole (a huge record costs memory in proportion to its length); without it,
    samples are truncated to the row length and rows are padded.
    For plain text files use ``source="text", data_files=PATH``: one record per line, or
    per blank-line separated paragraph with ``sample_by="paragraph"``, or the whole file
    with ``sample_by="document"``.

    torchtune 0.6.1's signature ``text_completion_dataset(tokenizer, source,
    column="text", add_eos=True, packed=False, split_across_pack=True, split="train",
    filter_fn=None, **load_dataset_kwargs)`` works unchanged with keyword arguments, and
    the tokenizer's ``max_seq_len`` is the limit when ``max_seq_len`` is not given. 0.6.1
    cut a sample to ``max_seq_len - 1`` tokens without EOS; this keeps ``max_seq_len``
    (EOS last), one more, and does not cut packed documents that are split across rows.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (Optional[str]): Hub dataset name, or a loader ("text", "json" ...) with
            ``data_files``; required.
        column (str): the text column.
        max_seq_len (Optional[int]): truncation length (unpacked) or row length (packed);
            None: ``tokenizer.max_seq_len`` if set, else no limit (and packed fails).
        packed (bool): pack into rows of exactly ``max_seq_len``.
        add_eos (bool): end each document with EOS.
        num_proc (int): processes for tokenizing.
        split_across_pack (bool): when packed, split documents across rows (True) or
            truncate them to a row and pad (False).
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it ("train[:1000]").
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (``data_files``,
            ``name``, ``sample_by`` ...).

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    name = f"text_completion_dataset({source!r})"
    max_seq_len = resolve_max_seq_len(tokenizer, max_seq_len)
    if packed:
        pack_length(name, max_seq_len)
    ds = load_hf_dataset(source, split=split, filter_fn=filter_fn, **load_dataset_kwargs)
    check_columns(ds, [column], source)
    limit = None if packed and split_across_pack else max_seq_len
    transform = _TextTransform(tokenizer, column, add_eos, limit)
    # BOS + text (+ EOS) has a target unless it is cut to one token or is an empty text
    # without EOS
    remedy = "raise max_seq_len" if add_eos else "raise max_seq_len, or drop empty texts"
    tokenized = tokenize(
        ds, transform, name=name, max_seq_len=limit, num_proc=num_proc, remedy=remedy
    )
    if packed:
        return PackedDataset(
            tokenized, max_seq_len, padding_idx=tokenizer.pad_id,
            split_across_pack=split_across_pack,
        )
    return tokenized


def wikitext_dataset(
    tokenizer: Tokenizer,
    source: str = "EleutherAI/wikitext_document_level",
    subset: Optional[str] = "wikitext-103-v1",
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    **kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """WikiText, one document (the "page" column) per sample, as torchtune 0.6.1's
    ``wikitext_dataset``: ``text_completion_dataset`` with ``name=subset``.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or a loader with ``data_files``.
        subset (Optional[str]): the dataset configuration (``load_dataset``'s ``name``);
            None for none (a local file).
        max_seq_len (Optional[int]): as in ``text_completion_dataset`` (0.6.1 passed it
            on to ``load_dataset`` by mistake; here it truncates).
        packed (bool): pack into rows, documents split across them.
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it.
        **kwargs: ``text_completion_dataset``'s other arguments (``add_eos``,
            ``num_proc`` ...) and ``datasets.load_dataset``'s.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    if subset is not None:
        kwargs["name"] = subset
    return text_completion_dataset(
        tokenizer, source, column="page", max_seq_len=max_seq_len, packed=packed,
        filter_fn=filter_fn, split=split, **kwargs,
    )


def cnn_dailymail_articles_dataset(
    tokenizer: Tokenizer,
    source: str = "ccdv/cnn_dailymail",
    max_seq_len: Optional[int] = None,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    **kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """The CNN/DailyMail news articles (the "article" column, configuration "3.0.0") as
    text completion data, as torchtune 0.6.1's ``cnn_dailymail_articles_dataset``.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or a loader with ``data_files``.
        max_seq_len (Optional[int]): as in ``text_completion_dataset``.
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it.
        **kwargs: ``text_completion_dataset``'s other arguments (``packed``, ``add_eos``
            ...) and ``datasets.load_dataset``'s (``name`` replaces "3.0.0").

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    kwargs.setdefault("name", "3.0.0")
    return text_completion_dataset(
        tokenizer, source, column="article", max_seq_len=max_seq_len,
        filter_fn=filter_fn, split=split, **kwargs,
    )
