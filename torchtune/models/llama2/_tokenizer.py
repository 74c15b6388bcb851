"""The Llama 2 tokenizer builder: Meta's SentencePiece model, with torchtune 0.6.1's
``max_seq_len`` and ``prompt_template`` arguments.

Llama 2's chat format is a text format (``[INST] ... [/INST]``, no control ids), which
``chat_dataset`` applies with ``Llama2ChatFormat``; this tokenizer has no
``tokenize_messages``. 0.6.1's default ``prompt_template``,
``"torchtune.models.llama2.Llama2ChatTemplate"``, names that same format, and the
tokenizer keeps the resolved template as ``prompt_template`` for datasets to read.
"""

from typing import Any, List, Optional, Sequence

from torchtune.tokenizers import SentencePieceTokenizer
from torchtune.tokenizers._prompt_template import resolve_prompt_template

LLAMA2_CHAT_TEMPLATE = "torchtune.models.llama2.Llama2ChatTemplate"


class Llama2Tokenizer:
    """A ``SentencePieceTokenizer`` with its builder's settings: it holds the
    SentencePiece model (``encode``, ``decode`` and the ids are the model's) and keeps
    ``max_seq_len`` and ``prompt_template`` for datasets to read.

    Args:
        path (str): the ``tokenizer.model`` file.
        max_seq_len (Optional[int]): the truncation length datasets use when they are given
            none; None for no limit.
        prompt_template (Optional[Any]): see ``resolve_prompt_template``; None for none.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a SentencePiece model, or ``prompt_template`` does
            not resolve.
    """

    def __init__(
        self,
        path: str,
        max_seq_len: Optional[int] = None,
        prompt_template: Any = LLAMA2_CHAT_TEMPLATE,
    ):
        self._base = SentencePieceTokenizer(path)
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)

    # ----- the SentencePiece model's attributes and methods -----

    path = property(lambda self: self._base.path)
    bos_id = property(lambda self: self._base.bos_id)
    eos_id = property(lambda self: self._base.eos_id)
    pad_id = property(lambda self: self._base.pad_id)
    vocab_size = property(lambda self: self._base.vocab_size)
    splits_at_spaces = property(lambda self: self._base.splits_at_spaces)

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
    ) -> List[int]:
        """``SentencePieceTokenizer.encode``."""
        return self._base.encode(text, add_bos, add_eos, trim_leading_whitespace)

    def decode(self, ids: Sequence[int]) -> str:
        """``SentencePieceTokenizer.decode``."""
        return self._base.decode(ids)


def llama2_tokenizer(
    path: str,
    max_seq_len: Optional[int] = None,
    prompt_template: Any = LLAMA2_CHAT_TEMPLATE,
) -> Llama2Tokenizer:
    """The Llama 2 SentencePiece tokenizer stored at ``path`` (``tokenizer.model``).

    torchtune 0.6.1's signature.

    Args:
        path (str): the ``tokenizer.model`` file.
        max_seq_len (Optional[int]): stored as ``max_seq_len``, the truncation length
            datasets fall back on; None for no limit.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None (``resolve_prompt_template``); the default is Llama 2's chat
            format.

    Returns:
        Llama2Tokenizer: a ``SentencePieceTokenizer``'s API (it holds one); see
        docs/design.md.
    """
    return Llama2Tokenizer(path, max_seq_len=max_seq_len, prompt_template=prompt_template)
