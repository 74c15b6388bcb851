"""Encode only as much of a long text as a truncated sample can keep.

A sample cut to ``max_seq_len`` tokens needs only the first ids of its text, but encoding
the whole text costs memory and time in proportion to the text: one 60 MB record cost
9.6 GB and 151 s with Qwen 2.5's ``tokenizer.json``, 3.0 GB with Llama 2's SentencePiece
model (measured for issue 24). ``encode_truncated`` encodes prefixes of the text instead,
each at least twice as long as the one before, until a prefix gives ids known to be the
whole text's.

Two kinds of cut
----------------
A prefix is ``text[:cut]``. The *exact* cut is before a space (U+0020) whose preceding
character is neither whitespace nor SentencePiece's space symbol "▁" (U+2581), for a
tokenizer whose ``splits_at_spaces`` is true (the default): there the prefix's ids are a
prefix of the whole text's (argued below), so one encode suffices. Any other cut is
*checked*: before the first whitespace character that follows a non-whitespace one, or,
where there is none, at a plain character boundary. Its ids may differ from the whole
text's near the cut, so they are used only when the prefix and the one before it (at
most half as long) agree on their first ``max_tokens + _MARGIN_IDS`` ids. The first cut
is searched for from ``n = _CHARS_PER_ID_GUESS * (max_tokens + _MARGIN_IDS)`` characters
on, each next one from twice the last cut, each within a quarter of its start.

Why an exact cut keeps the ids
------------------------------
For a SentencePiece model:

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

Regex pre-tokenizers (GPT-2's, Llama 3's tiktoken, Qwen's ``tokenizer.json``) also start
a chunk at such a space and merge only within chunks (the argument for each pattern is in
``torchtune/models/llama3/_tokenizer.py`` and ``torchtune/models/qwen2/_tokenizer.py``).
The last ``_MARGIN_IDS`` ids of an exact prefix's encoding are never kept either: an
effect of the cut confined to the last few pieces (a normalization rule or a merge at the
end that the argument did not foresee) cannot reach the ids returned.

Why two agreeing prefixes give the whole text's ids
---------------------------------------------------
Let ``A`` and ``B`` encode ``text[:c1]`` and ``text[:c2]``, ``c2 >= 2 * c1``, and agree on
their first ``w = max_tokens + _MARGIN_IDS`` ids. Say the cut at ``c2`` *reaches back* to
``s`` when ``B`` is the whole text's ids for ``text[:s]`` followed by other ids. ``A[:w]``
spells the start of ``text[:c1]``, and so does ``B[:w]``, the same ids; if ``s >= c1``,
``B[:w]`` lies within the ids ``B`` shares with the whole text, and the ids returned are
exact. So what matters is how far back a cut reaches; the two cuts are
``c2 - c1 >= c1 >= 6 * w`` characters apart.

- Regex pre-tokenizer + BPE (Llama 3's tiktoken, Qwen's and GPT-2's ``tokenizer.json``):
  BPE merges within a chunk, and each alternative of these patterns matches by looking
  at one run of letters, digits, punctuation or whitespace (with a character before it
  or newlines after it) and at most one character beyond, so a cut reaches back at most
  to the start of the chunk holding it, or of the whitespace chunk just before that one
  (``\\s+(?!\\S)`` looks one character ahead). NFC, Qwen's normalizer, composes a
  character only with the marks after it, all inside that chunk. Chunks end at
  whitespace and wherever letters, digits and punctuation meet (Qwen splits digits one
  by one, Llama 3 into threes from a run's start), so unless one such run, with the
  whitespace before it, covers ``c1`` to ``c2``, the check is exact. Llama 3's tokenizer
  also encodes runs of over 25,000 characters in 25,000-character pieces counted from
  the run's start (as Meta's does), so there a cut never reaches back 25,000
  characters, and once ``c1 >= 25,000`` every check is exact.
- SentencePiece (Llama 2): no piece holds "▁" after another character (above), and
  Llama 2's pieces contain no "\\n" or "\\t", so no piece and no merge spans those: a cut
  reaches back at most to the last newline or tab before it, or to the start of the
  word it falls in (with the run of spaces that starts the word). Unless one word with
  no newline or tab covers ``c1`` to ``c2``, the check is exact.
- Within one run longer than ``c1`` (megabytes of letters, CJK without punctuation, one
  SentencePiece word): the cut can reach back only through the merges (a unigram
  model's best path alike). Every backend here merges the best adjacent pair first and
  breaks ties leftmost first, and in our measurements
  (``tests/torchtune/tokenizers/test_truncated_any_text.py``: runs of one letter, of
  letter patterns, random letters, digits, CJK, mixed text, a story without spaces;
  Llama 2, Llama 3, Qwen 2.5 and Qwen 3 vocabularies) a cut changed at most the last 2
  ids of its prefix. But no bound holds for every merge table: a merge that the cut
  makes possible can change the merge its neighbour takes, and so on leftwards. Here
  the agreement of two cuts at least ``c1`` characters apart is evidence, not proof:
  both would have to change the same kept ids in the same way. This is the residual
  risk, for records with a single run of more than ``6 * w`` characters.

When prefixes keep disagreeing, they double until the whole text is encoded: the ids are
then right, at the old peak memory and up to three times the old time.

Cost
----
Each cut is 2 to 2.5 times the one before, so all prefixes together are at most twice
the last. If each id spells at most ``K`` characters of the text (16 for Llama 2's
longest pieces) and a cut changes fewer than ``_MARGIN_IDS`` ids, the first
cut of at least ``K * (w + 16)`` characters gives ``w`` exact ids and so does the next:
fewer than ``max(13 * K, 27) * (w + 16)`` characters are encoded in all (``max(8 * K,
18) * (w + 16)`` in a text without whitespace, where each cut is twice the last). Memory
and time follow ``max_tokens``, not the text.
"""

import re
from typing import Callable, List, Optional, Tuple

from torchtune._errors import UserValueError
from torchtune.tokenizers._types import Tokenizer

# A space that follows a character other than whitespace or "▁": an exact cut.
_EXACT_CUT = re.compile(r"(?<=[^\s\u2581]) ")

# Whitespace after a non-whitespace character: the checked cut tried first, because
# pre-tokenizers and SentencePiece words break there, so the cut reaches back least.
_WHITESPACE_CUT = re.compile(r"(?<=\S)\s")

# Ids past ``max_tokens`` that an exact prefix must also yield and two checked prefixes
# must also agree on (see the module docstring).
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

    Prefixes of the text are encoded, each at least twice as long as the one before,
    until one cut before a space that follows a word yields ``max_tokens`` ids plus a
    safety margin (when the tokenizer's ``splits_at_spaces`` attribute is true or
    absent), or one cut anywhere else agrees with the prefix before it on that many ids
    (see the module docstring). Memory and time are then in proportion to
    ``max_tokens``, not to the text, for any text: one without spaces too.

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

    def encode(part: str, eos: bool) -> List[int]:
        return tokenizer.encode(
            part, add_bos=add_bos, add_eos=eos, trim_leading_whitespace=trim_leading_whitespace
        )

    if max_tokens is not None and max_tokens <= 0:
        return []
    if max_tokens is not None:
        exact_ok = getattr(tokenizer, "splits_at_spaces", True)
        ids = _encode_prefixes(text, max_tokens, exact_ok, encode)
        if ids is not None:
            return ids
    ids = encode(text, add_eos)
    return ids if max_tokens is None else ids[:max_tokens]


def _encode_prefixes(
    text: str, max_tokens: int, exact_ok: bool, encode: Callable[[str, bool], List[int]]
) -> Optional[List[int]]:
    """The first ``max_tokens`` ids from prefixes of ``text``, or None when only the whole
    text settles them (the prefixes doubled past its end)."""
    wanted = max_tokens + _MARGIN_IDS
    previous: List[int] = []  # the first ``wanted`` ids of the last prefix
    start = _CHARS_PER_ID_GUESS * wanted
    while start < len(text):
        cut, exact = _cut_in(text, start, exact_ok)
        ids = encode(text[:cut], False)  # a prefix is not the end of the text: no EOS
        if len(ids) >= wanted and (exact or ids[:wanted] == previous):
            return ids[:max_tokens]
        previous = ids[:wanted]
        start = 2 * cut
    return None


def _cut_in(text: str, start: int, exact_ok: bool) -> Tuple[int, bool]:
    """A cut in ``[start, 1.25 * start]`` (``start < len(text)``) and whether it is exact:
    the first exact cut if allowed, else the first whitespace after a non-whitespace
    character, else ``start`` itself."""
    # A quarter of ``start`` holds a space in any prose, and keeps each prefix at most
    # 2.5 times the one before, which the cost bound (module docstring) needs.
    end = min(len(text), start + start // 4 + 1)
    if exact_ok and (match := _EXACT_CUT.search(text, start, end)):
        return match.start(), True
    match = _WHITESPACE_CUT.search(text, start, end)
    return (match.start() if match else start), False


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
