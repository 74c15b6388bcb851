"""A Hugging Face ``tokenizer.json`` behind the ``Tokenizer`` protocol.

The BPE, normalizer, pre-tokenizer and decoder are the ``tokenizers`` library's, run from
the file as is; this module adds BOS/EOS by id and keeps user text from becoming control
ids.

Special-token text in user text
-------------------------------
``tokenizers`` first splits a text at its *added tokens* and gives each match its id;
``encode(..., add_special_tokens=False)`` only turns off the post-processor (BOS/EOS
templates), not that pass, so "<|im_end|>" typed by a user would still end a turn. The
library's own switch for this is ``Tokenizer.encode_special_tokens = True`` (what
transformers sets for ``split_special_tokens=True``): added tokens flagged ``special``
are then left in the text and byte-level-BPE-encoded like any other text. We keep two
``tokenizers.Tokenizer`` objects built from the same JSON: ``encode`` uses the one with
the switch on, ``encode_with_special`` (trusted text such as a rendered chat template)
the one with it off. No splitting is hand-written.

Added tokens *not* flagged special (Qwen's ``<think>``, ``<tool_call>``, FIM tokens) are
ordinary vocabulary words: the switch leaves them matched, as transformers' tokenizer
matches them in any text, so ``encode("<think>")`` is their single id, as the model saw
in pre-training.
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tokenizers import (
    AddedToken,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    Regex,
    Tokenizer as _HFTokenizer,
)

from torchtune._errors import UserFileNotFoundError, UserValueError


class HuggingFaceBaseTokenizer:
    """A tokenizer read from a Hugging Face ``tokenizer.json``.

    Args:
        path (str): the ``tokenizer.json`` file (with ``tokenizer_json``: only the name
            messages give the tokenizer).
        bos_id (Optional[int]): id prepended when ``add_bos=True``; None for models
            without BOS (Qwen): then ``add_bos`` adds nothing and ``bos_id`` is None.
        eos_id (int): id appended when ``add_eos=True``.
        pad_id (Optional[int]): padding id; ``eos_id`` when None.
        splits_at_spaces (bool): no piece spans a space that follows a non-whitespace
            character (prove it for the file's pre-tokenizer before setting it; see
            ``torchtune/models/qwen2/_tokenizer.py``).
        tokenizer_json (Optional[str]): the ``tokenizer.json`` text, when the caller built
            it (``byte_level_bpe_json``) instead of reading it from ``path``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a ``tokenizer.json`` or an id is out of range.
    """

    def __init__(
        self,
        path: str,
        *,
        bos_id: Optional[int],
        eos_id: int,
        pad_id: Optional[int] = None,
        splits_at_spaces: bool = False,
        tokenizer_json: Optional[str] = None,
    ):
        self.path = os.fspath(path)
        json_str = tokenizer_json
        if json_str is None:
            json_str = read_text(self.path, "tokenizer.json")
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.splits_at_spaces = splits_at_spaces
        self._load(json_str)

    def _load(self, json_str: str) -> None:
        try:
            self._tok = _HFTokenizer.from_str(json_str)  # user text: special tokens as text
            self._tok_special = _HFTokenizer.from_str(json_str)  # trusted text
        except Exception as e:  # the library raises a bare Exception on bad JSON
            raise UserValueError(f"{self.path} is not a tokenizer.json: {e}") from None
        added = sorted(self._tok.get_added_tokens_decoder().items())
        self._tok.encode_special_tokens = True
        self._tok_special.encode_special_tokens = False
        self._json = json_str
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.added_tokens: Dict[str, int] = {a.content: i for i, a in added}
        self.special_tokens: Dict[str, int] = {a.content: i for i, a in added if a.special}
        self._special_ids = frozenset(self.special_tokens.values())
        for name in ("bos_id", "eos_id", "pad_id"):
            i = getattr(self, name)
            if i is not None and not 0 <= i < self.vocab_size:
                raise UserValueError(
                    f"{name} {i} is outside the vocabulary [0, {self.vocab_size}) of {self.path}"
                )

    # Pickling (HF datasets fingerprints the tokenizer and ships it to workers) carries
    # the JSON text: ``tokenizers`` pickles forget ``encode_special_tokens``.
    def __getstate__(self) -> Dict[str, Any]:
        drop = ("_tok", "_tok_special", "_special_ids", "added_tokens", "special_tokens")
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        json_str = state.pop("_json")
        self.__dict__.update(state)
        self._load(json_str)

    def token_to_id(self, token: str) -> Optional[int]:
        """The id of a vocabulary or added token's text, or None."""
        return self._tok_special.token_to_id(token)

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
    ) -> List[int]:
        """Encode ``text``; special-token text in it stays text (see the module docstring).

        Args:
            text (str): the text.
            add_bos (bool): prepend ``bos_id`` (nothing when the model has none).
            add_eos (bool): append ``eos_id``.
            trim_leading_whitespace (bool): accepted for the ``Tokenizer`` protocol; a
                no-op, since byte-level BPE adds no dummy-prefix space to strip.

        Returns:
            List[int]: the ids.
        """
        ids = [self.bos_id] if add_bos and self.bos_id is not None else []
        ids += self._tok.encode(text, add_special_tokens=False).ids
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def encode_with_special(self, text: str) -> List[int]:
        """Encode ``text`` turning special-token text into control ids (no BOS/EOS).

        For trusted text only, e.g. a rendered chat template; datasets never call it.
        """
        return self._tok_special.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Decode ids to text.

        Args:
            ids (Sequence[int]): ids in ``[0, vocab_size)``.
            skip_special_tokens (bool): drop the ids of added tokens flagged special
                (``<|im_end|>`` ...); False writes their text. Non-special added tokens
                (``<think>``) are always written.

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
        return self._tok_special.decode(ids, skip_special_tokens=skip_special_tokens)


# The pre-tokenizer regex of OpenAI's cl100k_base, which Llama 3's and Phi-4's tokenizers
# use (tiktoken's possessive form, written without possessives as tokenizer.json has it).
CL100K_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def read_text(path: str, what: str) -> str:
    """The UTF-8 text of the file ``path``, a ``what`` (named in the one-line errors)."""
    if not os.path.isfile(path):
        raise UserFileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise UserValueError(f"{path} is not a {what}: not UTF-8 text") from None


def read_json(path: str, what: str) -> Any:
    """The JSON value in the file ``path``, a ``what`` (named in the one-line errors)."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise UserValueError(f"{path} is not a {what}: {e}") from None
    except RecursionError:  # json's parser recurses once per level of [ or {
        raise UserValueError(
            f"{path} is not a {what}: its JSON nests arrays or objects too deeply to read"
        ) from None


def read_added_tokens(path: str) -> List[Tuple[str, int, bool]]:
    """The added tokens of a Hugging Face ``tokenizer.json``: (text, id, special).

    torchtune 0.6.1's ``special_tokens_path``: a ``tokenizer.json``, or any JSON file with
    an ``added_tokens`` list of ``{"content", "id"}`` objects; a token without a
    ``special`` flag counts as special.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it has no such list.
    """
    data = read_json(path, "tokenizer.json (special_tokens_path)")
    added = data.get("added_tokens") if isinstance(data, dict) else None
    if not isinstance(added, list) or not all(
        isinstance(a, dict) and isinstance(a.get("content"), str) and isinstance(a.get("id"), int)
        for a in added
    ):
        raise UserValueError(
            f"{path} (special_tokens_path) has no 'added_tokens' list of "
            '{"content": str, "id": int} objects, as a tokenizer.json has'
        )
    return [(a["content"], a["id"], bool(a.get("special", True))) for a in added]


def byte_level_bpe_json(
    vocab_path: str,
    merges_path: str,
    *,
    split_pattern: str,
    added_tokens: Sequence[Tuple[str, int, bool]],
    nfc: bool = True,
) -> str:
    """The ``tokenizer.json`` text of a GPT-2-style byte-level BPE given as the two files
    ``vocab.json`` and ``merges.txt`` (what ``transformers``' slow tokenizers read).

    ``tokenizers`` reads the files (``BPE.from_file``); around the BPE go the stages a Qwen
    ``tokenizer.json`` spells out: NFC normalizer, a ``Split`` on ``split_pattern``
    (isolated) then ``ByteLevel`` without prefix space or regex, ``ByteLevel`` decoder.

    Args:
        vocab_path (str): ``vocab.json``, token text to id.
        merges_path (str): ``merges.txt``, one merge a line, in rank order.
        split_pattern (str): the pre-tokenizer's regex.
        added_tokens (Sequence[Tuple[str, int, bool]]): (text, id, special) of the added
            tokens: those the vocabulary lacks must follow its ids without gaps (as
            Qwen's and Phi-4's do); one it holds must be at its id there.
        nfc (bool): normalize input text to NFC first.

    Returns:
        str: JSON for ``tokenizers.Tokenizer.from_str`` / ``HuggingFaceBaseTokenizer``.

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: if the files are not a BPE vocabulary and its merges, or the added
            tokens' ids do not follow the vocabulary.
    """
    for path, what in ((vocab_path, "vocab.json"), (merges_path, "merges.txt")):
        if not os.path.isfile(path):
            raise UserFileNotFoundError(f"{what} not found: {path}")
    try:
        tok = _HFTokenizer(models.BPE.from_file(vocab_path, merges_path))
    except Exception as e:  # the library raises a bare Exception on bad files
        raise UserValueError(
            f"{vocab_path} and {merges_path} are not a BPE vocab.json and merges.txt: {e}"
        ) from None
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split_pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    # ``add_tokens`` numbers new tokens from the vocabulary's size on: right when the ids
    # follow it, checked here and after. A vocab.json may already hold a token at its id.
    vocab = tok.get_vocab(with_added_tokens=False)
    added = sorted(added_tokens, key=lambda a: a[1])
    new = [i for text, i, _ in added if vocab.get(text) != i]
    n = tok.get_vocab_size(with_added_tokens=False)
    if new != list(range(n, n + len(new))):
        raise UserValueError(
            f"{vocab_path}: the special tokens' ids {new[:4]}... do not "
            f"follow its {n} tokens without gaps"
        )
    tok.add_tokens(
        [
            AddedToken(text, special=special, normalized=False, single_word=False)
            for text, _, special in added
        ]
    )
    for text, i, _ in added:
        if tok.token_to_id(text) != i:
            raise UserValueError(
                f"{vocab_path}: special token {text!r} is also a vocabulary token"
            )
    return tok.to_str()
