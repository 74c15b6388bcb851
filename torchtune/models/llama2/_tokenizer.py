"""The Llama 2 tokenizer builder: Meta's SentencePiece model, with torchtune 0.6.1's
``max_seq_len`` and ``prompt_template`` arguments.

Llama 2's chat format is a text format (``[INST] ... [/INST]``, no control ids), which
``chat_dataset`` applies with ``Llama2ChatFormat``; this tokenizer has no
``tokenize_messages``. 0.6.1's default ``prompt_template``,
``"torchtune.models.llama2.Llama2ChatTemplate"``, names that same format, and the
tokenizer keeps the resolved template as ``prompt_template`` for datasets to read.
"""

from typing import Any, Dict, Optional

from torchtune.tokenizers import SentencePieceTokenizer
from torchtune.tokenizers._prompt_template import resolve_prompt_template

LLAMA2_CHAT_TEMPLATE = "torchtune.models.llama2.Llama2ChatTemplate"


class Llama2Tokenizer(SentencePieceTokenizer):
    """A ``SentencePieceTokenizer`` that also carries its builder's settings.

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
        super().__init__(path)
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state.update(max_seq_len=self.max_seq_len, prompt_template=self.prompt_template)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        state = dict(state)
        self.max_seq_len = state.pop("max_seq_len")
        self.prompt_template = state.pop("prompt_template")
        super().__setstate__(state)


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
        Llama2Tokenizer: a ``SentencePieceTokenizer``; see docs/design.md for its API.
    """
    return Llama2Tokenizer(path, max_seq_len=max_seq_len, prompt_template=prompt_template)
