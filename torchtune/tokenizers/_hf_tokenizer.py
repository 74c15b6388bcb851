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
from typing import Any, Dict, List, Optional, Sequence

from tokenizers import Tokenizer as _HFTokenizer

from torchtune._errors import UserFileNotFoundError, UserValueError


class HuggingFaceBaseTokenizer:
    """A tokenizer read from a Hugging Face ``tokenizer.json``.

    Args:
        path (str): the ``tokenizer.json`` file.
        bos_id (Optional[int]): id prepended when ``add_bos=True``; None for models
            without BOS (Qwen): then ``add_bos`` adds nothing and ``bos_id`` is None.
        eos_id (int): id appended when ``add_eos=True``.
        pad_id (Optional[int]): padding id; ``eos_id`` when None.
        splits_at_spaces (bool): no piece spans a space that follows a non-whitespace
            character (prove it for the file's pre-tokenizer before setting it; see
            ``torchtune/models/qwen2_5/_tokenizer.py``).

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
    ):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise UserFileNotFoundError(f"tokenizer.json not found: {self.path}")
        with open(self.path, encoding="utf-8") as f:
            json_str = f.read()
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.pad_id = eos_id if pad_id is None else pad_id
        self.splits_at_spaces = splits_at_spaces
        self._load(json_str)

    def _load(self, json_str: str) -> None:
        try:
            self._tok = _HFTokenizer.from_str(json_str)  # user text: special tokens as text
            self._tok_special = _HFTokenizer.from_str(json_str)  # trusted text
            added = json.loads(json_str).get("added_tokens", [])
        except Exception as e:  # the library raises a bare Exception on bad JSON
            raise UserValueError(f"{self.path} is not a tokenizer.json: {e}") from None
        self._tok.encode_special_tokens = True
        self._tok_special.encode_special_tokens = False
        self._json = json_str
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.added_tokens: Dict[str, int] = {a["content"]: a["id"] for a in added}
        self.special_tokens: Dict[str, int] = {
            a["content"]: a["id"] for a in added if a.get("special", False)
        }
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
