"""A tiktoken BPE (the Llama 3 tokenizer is one) behind the ``Tokenizer`` protocol.

The BPE itself is tiktoken's; this module only reads the rank file, cuts very long texts
into pieces the way Meta's ``llama/tokenizer.py`` does, and adds BOS/EOS.
"""

import base64
import binascii
import os
import re
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import tiktoken

from torchtune._errors import UserFileNotFoundError, UserValueError

# tiktoken's regex engine is slow (or overflows its stack) on huge inputs and on very long
# runs of whitespace or of non-whitespace; Meta's tokenizer.py encodes at most this many
# characters at a time, and cuts runs longer than this many characters. We do the same so
# that our ids equal Meta's on such texts too.
MAX_ENCODE_CHARS = 400_000
MAX_NO_WHITESPACES_CHARS = 25_000

_LONG = MAX_NO_WHITESPACES_CHARS + 1
_LONG_RUN = re.compile(rf"\s{{{_LONG},}}|\S{{{_LONG},}}")


def load_tiktoken_ranks(path: str) -> Dict[bytes, int]:
    """Read a tiktoken rank file: one ``base64(token bytes) rank`` line per token.

    Args:
        path (str): the file (e.g. Meta's Llama 3 ``tokenizer.model``).

    Returns:
        Dict[bytes, int]: token bytes to rank.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if a line is malformed or the ranks are not 0..n-1.
    """
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"tiktoken tokenizer file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    ranks: Dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise UserValueError(
                f"{path} is not a tiktoken BPE file: line {lineno} is not 'base64 rank'"
            ) from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserValueError(f"{path}: the ranks are not the distinct numbers 0..{len(ranks) - 1}")
    return ranks


def split_long_text(text: str) -> Iterator[str]:
    """Cut ``text`` as Meta's Llama 3 ``tokenizer.py`` does before encoding.

    Pieces of ``MAX_ENCODE_CHARS`` characters, and within them a run of whitespace or of
    non-whitespace (``str.isspace``, which equals ``re``'s ``\\s``) longer than
    ``MAX_NO_WHITESPACES_CHARS`` is cut every ``MAX_NO_WHITESPACES_CHARS`` characters from
    the start of the run, as Meta's character-by-character loop cuts it.

    Args:
        text (str): the text.

    Yields:
        str: pieces that join to ``text``.
    """
    for start in range(0, max(len(text), 1), MAX_ENCODE_CHARS):
        piece = text[start : start + MAX_ENCODE_CHARS]
        begin = 0
        for run in _LONG_RUN.finditer(piece):
            step = MAX_NO_WHITESPACES_CHARS
            for cut in range(run.start() + step, run.end(), step):
                yield piece[begin:cut]
                begin = cut
        yield piece[begin:]


class TikTokenBaseTokenizer:
    """A tiktoken BPE from a rank file, a split pattern and special tokens.

    ``encode`` never turns special-token text found in ``text`` into control ids: a user
    writing "<|eot_id|>" gets the ids of that text, so data cannot inject turn boundaries.
    Formats that need control ids (``Llama3Tokenizer.tokenize_messages``) add them by id.
    tiktoken has no dummy-prefix space, so ``trim_leading_whitespace`` changes nothing.

    Args:
        path (str): the tiktoken rank file.
        name (str): the encoding's name (for messages and tiktoken).
        pattern (str): the regex that splits text into chunks before BPE.
        bos_id (int): id prepended when ``add_bos=True``.
        eos_id (int): id appended when ``add_eos=True``.
        special_tokens (Mapping[str, int]): special-token text to id; together with the
            ranks they must cover ``0..vocab_size-1``.
        pad_id (Optional[int]): padding id; ``eos_id`` when None.
        splits_at_spaces (bool): no chunk of ``pattern`` spans a space that follows a
            non-whitespace character, so ``encode_truncated`` may cut there (prove it for
            the pattern before setting it; see ``torchtune/models/llama3/_tokenizer.py``).
        num_base_tokens (Optional[int]): the number of tokens the rank file must hold
            (e.g. Llama 3's 128,000); None for any.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a rank file or the ids leave gaps.
    """

    def __init__(
        self,
        path: str,
        name: str,
        pattern: str,
        bos_id: int,
        eos_id: int,
        special_tokens: Mapping[str, int],
        pad_id: Optional[int] = None,
        splits_at_spaces: bool = False,
        num_base_tokens: Optional[int] = None,
    ):
        self.path = os.fspath(path)
        self.name = name
        self.pattern = pattern
        self.special_tokens = dict(special_tokens)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.splits_at_spaces = splits_at_spaces
        self.num_base_tokens = num_base_tokens
        self._load(load_tiktoken_ranks(self.path))

    def _load(self, ranks: Dict[bytes, int]) -> None:
        if self.num_base_tokens is not None and len(ranks) != self.num_base_tokens:
            raise UserValueError(
                f"{self.path} has {len(ranks)} tokens, not the {self.num_base_tokens} of "
                f"the {self.name} tokenizer"
            )
        ids = sorted(list(ranks.values()) + list(self.special_tokens.values()))
        if ids != list(range(len(ids))):
            raise UserValueError(
                f"{self.path}: its {len(ranks)} tokens and the {len(self.special_tokens)} "
                f"special tokens of {self.name} do not number 0..{len(ids) - 1} without gaps"
            )
        self._enc = tiktoken.Encoding(
            name=self.name,
            pat_str=self.pattern,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self._ranks = ranks
        self._special_ids = frozenset(self.special_tokens.values())
        self.vocab_size = self._enc.n_vocab

    # Pickling carries the ranks, not the path: HF datasets hashes the tokenizer to
    # fingerprint its .map cache (so the cache follows the vocabulary's content) and ships
    # it to worker processes when num_proc > 1.
    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_enc", "_special_ids")}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        ranks = state.pop("_ranks")
        self.__dict__.update(state)
        self._load(ranks)

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
    ) -> List[int]:
        """Encode ``text`` to ids, special-token text included as ordinary text.

        Args:
            text (str): the text.
            add_bos (bool): prepend ``bos_id``.
            add_eos (bool): append ``eos_id``.
            trim_leading_whitespace (bool): accepted for the ``Tokenizer`` protocol; a
                no-op, since tiktoken adds no dummy-prefix space to strip.

        Returns:
            List[int]: the ids.
        """
        ids = [self.bos_id] if add_bos else []
        for piece in split_long_text(text):
            ids += self._enc.encode_ordinary(piece)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def encode_with_special(self, text: str) -> List[int]:
        """Encode ``text`` turning special-token text into control ids (no BOS/EOS).

        For trusted text only, e.g. a rendered chat template; datasets never call it.

        Args:
            text (str): the text.

        Returns:
            List[int]: the ids.
        """
        return self._enc.encode(text, allowed_special="all", disallowed_special=())

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Decode ids to text.

        Args:
            ids (Sequence[int]): ids in ``[0, vocab_size)``.
            skip_special_tokens (bool): drop special ids (BOS, EOS, headers ...), as
                SentencePiece drops BOS/EOS; False writes their text.

        Returns:
            str: the text (bytes that are not valid UTF-8 become U+FFFD).

        Raises:
            ValueError: if an id is outside the vocabulary (e.g. the ignore index -100).
        """
        ids = [int(i) for i in ids]
        for pos, i in enumerate(ids):
            if not 0 <= i < self.vocab_size:
                raise ValueError(
                    f"decode: id {i} at position {pos} is outside the vocabulary "
                    f"[0, {self.vocab_size}) of {self.path}"
                )
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self._enc.decode(ids)
