"""Encode only as much of a long text as a truncated sample can keep.

A sample cut to ``max_seq_len`` tokens needs only the first ids of its text, but encoding
the whole text costs memory in proportion to the text: one 50 MB record gives ~13 million
ids and raised the peak memory by ~2.4 GB with the Llama 2 tokenizer. ``encode_truncated``
encodes a prefix of the text instead, cut where the cut cannot change the ids before it,
and grows the prefix until it yields enough ids.

Why the ids of the kept prefix are those of the whole text
----------------------------------------------------------
The prefix is ``text[:cut]`` where ``text[cut]`` is a space (U+0020) and ``text[cut - 1]``
is neither whitespace nor SentencePiece's own space symbol "▁" (U+2581): a cut at the
start of a run of spaces that follows a word. For a SentencePiece model:

- Normalization maps the prefix to a prefix of the whole text's normalized form that
  ends just before a "▁". "identity" (Llama 2) leaves characters alone and NFKC rules
  rewrite a character with the combining marks after it, which a space is not; the
  escaping of " " to "▁" is per character; the dummy-prefix "▁" (``add_dummy_prefix``)
  starts both texts alike; ``remove_extra_whitespaces`` drops leading whitespace (the
  same in both), collapses runs (the run at the cut is not in the prefix) and drops
  trailing whitespace (the prefix ends in a non-space).
- Segmentation: in a vocabulary trained with ``split_by_whitespace`` (SentencePiece's
  default, and Llama 2's setting) "▁" only starts a piece or makes up a whitespace-only
  piece ("▁▁▁▁"), so no piece has "▁" after another character and none can span the
  cut. BPE merges only adjacent symbols into vocabulary pieces, so no merge joins the
  two sides, and the left side's merges happen in the same order as when it is encoded
  alone (each merge picks the best pair, and pairs on the right never compete with the
  left's own); unigram's best path likewise passes through the cut.
  ``SentencePieceTokenizer`` checks this on its vocabulary and sets ``splits_at_spaces``.
- Byte fallback and ``split_digits`` act on single characters; ``trim_leading_whitespace``
  prepends the same text to both and strips the same ids.

Regex pre-tokenizers (GPT-2's, Llama 3's tiktoken) also start a chunk at such a space, and
merge only within chunks. Beyond the exact argument, the last ``_MARGIN_IDS`` ids of a
prefix's encoding are never kept: an effect of the cut confined to the last few pieces
(a normalization rule or a merge at the end that the argument did not foresee) cannot
reach the ids returned.

A text with no such space after the point where enough ids are expected (no whitespace
at all, or one endless run of spaces) is encoded whole, as before: correct, not cheaper.
"""

import re
from typing import List, Optional, Tuple

from torchtune._errors import UserValueError
from torchtune.tokenizers._types import Tokenizer

# A space that follows a character other than whitespace or "▁": a safe place to cut.
_SAFE_CUT = re.compile(r"(?<=[^\s\u2581]) ")

# Ids at the end of a prefix's encoding that are never kept (see the module docstring).
_MARGIN_IDS = 16

# First guess of characters per id; English averages ~4 with Llama 2. A low guess costs
# one more (twice as long) encode; a high one encodes more text than needed.
_CHARS_PER_ID_GUESS = 6


def encode_truncated(
    tokenizer: Tokenizer,
    text: str,
    max_tokens: Optional[int],
    *,
    add_bos: bool = True,
    add_eos: bool = True,
    trim_leading_whitespace: bool = False,
) -> List[int]:
    """``tokenizer.encode(text, ...)[:max_tokens]``, encoding only a prefix of a long text.

    The text is cut at a space that follows a word, at about ``_CHARS_PER_ID_GUESS``
    characters per wanted id, and the prefix is encoded; while it yields fewer than
    ``max_tokens`` ids plus a safety margin, the prefix doubles. Memory and time are then
    in proportion to ``max_tokens``, not to the text. A tokenizer whose ``splits_at_spaces``
    attribute is False (a piece may span a space) gets the text encoded whole.

    Args:
        tokenizer (Tokenizer): any tokenizer with ``encode(text, add_bos, add_eos,
            trim_leading_whitespace)``.
        text (str): the text.
        max_tokens (Optional[int]): how many ids to return at most (BOS and EOS count);
            None for all.
        add_bos (bool): prepend BOS, as in ``encode``.
        add_eos (bool): append EOS, as in ``encode``; it is among the returned ids only if
            the whole text's ids fit in ``max_tokens``.
        trim_leading_whitespace (bool): as in ``encode``.

    Returns:
        List[int]: the first ``max_tokens`` ids of the whole text's encoding.

    Example:
        >>> encode_truncated(tok, "Hello world, and more", 3)
        [1, 15043, 3186]
    """
    if max_tokens is not None and max_tokens <= 0:
        return []
    if max_tokens is not None and getattr(tokenizer, "splits_at_spaces", True):
        wanted = max_tokens + _MARGIN_IDS
        chars = _CHARS_PER_ID_GUESS * wanted
        while (cut := _safe_cut_at_or_after(text, chars)) is not None:
            ids = tokenizer.encode(
                text[:cut],
                add_bos=add_bos,
                add_eos=False,  # the prefix is not the end of the text
                trim_leading_whitespace=trim_leading_whitespace,
            )
            if len(ids) >= wanted:
                return ids[:max_tokens]
            chars = 2 * cut
    ids = tokenizer.encode(
        text, add_bos=add_bos, add_eos=add_eos, trim_leading_whitespace=trim_leading_whitespace
    )
    return ids if max_tokens is None else ids[:max_tokens]


def _safe_cut_at_or_after(text: str, pos: int) -> Optional[int]:
    """The first safe cut (see the module docstring) at index ``pos`` or later, if any."""
    if pos >= len(text):
        return None
    match = _SAFE_CUT.search(text, pos)
    return match.start() if match else None


TRUNCATION_TYPES = ("right", "left")


def check_truncation_type(truncation_type: str) -> str:
    """``truncation_type`` itself, if it is "right" or "left".

    Raises:
        ValueError: naming ``truncation_type``, for any other value.
    """
    if truncation_type not in TRUNCATION_TYPES:
        raise UserValueError(
            f"truncation_type must be 'right' or 'left', not {truncation_type!r}"
        )
    return truncation_type


def truncate_to_max_seq_len(
    tokens: List[int],
    mask: List[bool],
    max_seq_len: Optional[int],
    *,
    eos_id: int,
    add_end_tokens: bool,
    truncation_type: str = "right",
) -> Tuple[List[int], List[bool]]:
    """Cut a tokenized conversation to ``max_seq_len`` ids, as torchtune's ``truncate``.

    "right" keeps the first ``max_seq_len`` ids and, when the caller added end tokens,
    makes the last one ``eos_id`` (masked), so a cut sample still ends its document.
    "left" keeps the last ``max_seq_len`` ids, which already end as the whole did.
    A sequence that fits is returned unchanged; so is everything when ``max_seq_len`` is
    None.

    Returns:
        Tuple[List[int], List[bool]]: the ids and the mask, of equal length.
    """
    if max_seq_len is None or len(tokens) <= max_seq_len:
        return tokens, mask
    if truncation_type == "left":
        return tokens[len(tokens) - max_seq_len :], mask[len(mask) - max_seq_len :]
    tokens, mask = tokens[:max_seq_len], mask[:max_seq_len]
    if add_end_tokens and tokens:
        tokens[-1] = eos_id
        mask[-1] = True
    return tokens, mask
