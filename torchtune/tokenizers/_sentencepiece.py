import os
import re
from typing import Any, Dict, List, Sequence

from sentencepiece import SentencePieceProcessor

from torchtune._errors import UserFileNotFoundError, UserValueError

# Text whose encoding is prepended and then stripped when ``trim_leading_whitespace=True``.
# A newline works for Llama 2 style vocabularies: no piece contains "\n" (it is encoded by
# byte fallback), so no merge can cross it and the ids after it are exactly the ids of the
# text as it appears after a newline inside a longer string.
_TRIM_PREFIX = "\n"

# A piece with SentencePiece's space symbol after another character ("of▁the", "a▁") would
# span the start of a space run. Pieces are joined with NUL, which no piece contains.
_PIECE_SPANS_A_SPACE = re.compile("[^\u2581\0]\u2581")


class SentencePieceTokenizer:
    """A SentencePiece model (the Llama 2 tokenizer is one) behind the ``Tokenizer`` protocol.

    SentencePiece adds a dummy-prefix "▁" (a space) to every string it encodes, so
    ``encode("Paris")`` gives the ids of " Paris". That is right for the start of a text,
    but a response encoded on its own after a prompt that ends in a newline would gain a
    space the full text never had. ``encode(..., trim_leading_whitespace=True)`` encodes
    ``"\\n" + text`` and strips the ids of the "\\n" (torchtune's trick), giving the ids the
    text gets in the middle of a longer string. A model without the dummy prefix (Gemma's:
    ``adds_dummy_prefix`` False) encodes text as it reads, and the trim does nothing.

    Args:
        path (str): path to a SentencePiece ``.model`` file.

    Attributes:
        splits_at_spaces (bool): no piece of the vocabulary has a space after another
            character (true of models trained with SentencePiece's default
            ``split_by_whitespace``, Llama 2's included), so text cut before a space that
            follows a word encodes to a prefix of the whole text's ids; see
            ``encode_truncated``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a SentencePiece model.

    Example:
        >>> tok = SentencePieceTokenizer("tests/assets/llama2_tokenizer.model")
        >>> tok.encode("Hello world")
        [1, 15043, 3186, 2]
    """

    def __init__(self, path: str):
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserFileNotFoundError(f"SentencePiece tokenizer model not found: {path}")
        with open(path, "rb") as f:
            proto = f.read()
        self.path = path
        self._load(proto)

    def _load(self, proto: bytes) -> None:
        spm = SentencePieceProcessor()
        try:
            spm.LoadFromSerializedProto(proto)
        except RuntimeError:
            raise UserValueError(f"{self.path} is not a SentencePiece model file") from None
        self._spm = spm
        self.vocab_size = spm.vocab_size()
        self.bos_id = spm.bos_id()
        self.eos_id = spm.eos_id()
        # Llama 2's model has no pad piece (pad_id() == -1); 0 (<unk>) is what its
        # training code pads with, and padded positions are never attended to or learned.
        self.pad_id = spm.pad_id() if spm.pad_id() >= 0 else 0
        self._prefix_ids = spm.encode(_TRIM_PREFIX, out_type=int)
        # Gemma's models add no dummy-prefix space (and have "\n\n" pieces, so the trim
        # below would merge): there is then nothing to trim.
        self.adds_dummy_prefix = spm.normalize("a") != "a"
        # Control and unknown pieces ("<s>", "</s>", "<unk>") are never produced by encoding
        # text: a chat template's "<s>" means this id, not the characters.
        self.special_tokens = {
            spm.id_to_piece(i): i for i in range(spm.vocab_size())
            if spm.is_control(i) or spm.is_unknown(i)
        }
        pieces = "\0".join(spm.id_to_piece(i) for i in range(spm.vocab_size()))
        self.splits_at_spaces = _PIECE_SPANS_A_SPACE.search(pieces) is None

    # Pickling carries the model bytes, not the path: HF datasets hashes the tokenizer to
    # fingerprint its .map cache (so the cache follows the model's content) and ships it to
    # worker processes when num_proc > 1.
    def __getstate__(self) -> Dict[str, Any]:
        return {"path": self.path, "proto": self._spm.serialized_model_proto()}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.path = state["path"]
        self._load(state["proto"])

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
    ) -> List[int]:
        """Encode ``text`` to ids.

        Args:
            text (str): the text.
            add_bos (bool): prepend ``bos_id``.
            add_eos (bool): append ``eos_id``.
            trim_leading_whitespace (bool): drop the dummy-prefix space SentencePiece puts
                before the text, so that the ids are those ``text`` gets after a newline
                in a longer string (use it for a response encoded after its prompt).

        Returns:
            List[int]: the ids.
        """
        if not trim_leading_whitespace or not self.adds_dummy_prefix:
            return self._spm.encode(text, add_bos=add_bos, add_eos=add_eos, out_type=int)
        ids = self._spm.encode(_TRIM_PREFIX + text, out_type=int)
        n = len(self._prefix_ids)
        if ids[:n] != self._prefix_ids:
            raise UserValueError(
                f"{self.path}: cannot trim leading whitespace of {text[:40]!r}: the "
                f"encoding of {_TRIM_PREFIX!r} is not a prefix of its encoding"
            )
        ids = ids[n:]
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def piece_ids(self, pieces: Sequence[str], who: str) -> Dict[str, int]:
        """The ids of pieces of the model (a chat template's turn markers that are pieces
        of the vocabulary itself, as Gemma's ``<start_of_turn>`` is).

        Args:
            pieces (Sequence[str]): piece texts.
            who (str): the caller, named in the error (``gemma_tokenizer``).

        Returns:
            Dict[str, int]: text -> id.

        Raises:
            UserValueError: a piece the model does not have.
        """
        ids = {p: self._spm.piece_to_id(p) for p in pieces}
        missing = [p for p, i in ids.items() if self._spm.id_to_piece(i) != p]
        if missing:
            raise UserValueError(
                f"{who}: {self.path} has no piece {missing[0]!r}; is it the model's tokenizer.model?"
            )
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Decode ids to text.

        Args:
            ids (Sequence[int]): ids in ``[0, vocab_size)``; BOS/EOS decode to nothing.

        Returns:
            str: the text.

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
        return self._spm.decode(ids)
