"""The Mistral tokenizer builder: Mistral's SentencePiece model with torchtune 0.6.1's
``max_seq_len`` and ``prompt_template`` arguments.

Mistral 7B Instruct's chat format is a text format (``[INST] ... [/INST]`` around each user
turn, no control ids besides BOS/EOS), applied by the datasets through the tokenizer's
``prompt_template`` (``MistralChatTemplate`` by default, 0.6.1's name).
"""

from typing import Any, List, Optional, Sequence

from torchtune.tokenizers import SentencePieceTokenizer
from torchtune.tokenizers._prompt_template import resolve_prompt_template

MISTRAL_CHAT_TEMPLATE = "torchtune.models.mistral.MistralChatTemplate"


class MistralTokenizer:
    """A ``SentencePieceTokenizer`` with its builder's settings: ``encode``, ``decode`` and
    the ids are the SentencePiece model's; ``max_seq_len`` and ``prompt_template`` are kept
    for datasets to read.

    Args:
        path (str): the ``tokenizer.model`` file.
        max_seq_len (Optional[int]): the truncation length datasets use when they are given
            none; None for no limit.
        prompt_template (Optional[Any]): see ``resolve_prompt_template``; None for none.
    """

    def __init__(self, path: str, max_seq_len: Optional[int] = None,
                 prompt_template: Any = MISTRAL_CHAT_TEMPLATE):
        self._base = SentencePieceTokenizer(path)
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)

    path = property(lambda self: self._base.path)
    bos_id = property(lambda self: self._base.bos_id)
    eos_id = property(lambda self: self._base.eos_id)
    pad_id = property(lambda self: self._base.pad_id)
    vocab_size = property(lambda self: self._base.vocab_size)
    splits_at_spaces = property(lambda self: self._base.splits_at_spaces)

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True,
               trim_leading_whitespace: bool = False) -> List[int]:
        """``SentencePieceTokenizer.encode``."""
        return self._base.encode(text, add_bos, add_eos, trim_leading_whitespace)

    def decode(self, ids: Sequence[int]) -> str:
        """``SentencePieceTokenizer.decode``."""
        return self._base.decode(ids)


def mistral_tokenizer(path: str, max_seq_len: Optional[int] = None,
                      prompt_template: Any = MISTRAL_CHAT_TEMPLATE) -> MistralTokenizer:
    """The Mistral SentencePiece tokenizer stored at ``path`` (torchtune 0.6.1's signature).

    Args:
        path (str): the ``tokenizer.model`` file.
        max_seq_len (Optional[int]): stored as ``max_seq_len``; None for no limit.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None; the default is Mistral's ``[INST]`` format.

    Returns:
        MistralTokenizer: the tokenizer.
    """
    return MistralTokenizer(path, max_seq_len=max_seq_len, prompt_template=prompt_template)
