"""The Mistral tokenizer builder: Mistral's SentencePiece model with torchtune 0.6.1's
``max_seq_len`` and ``prompt_template`` arguments, and the Instruct models' chat template.

Mistral 7B Instruct's chat format is a text format (``[INST] ... [/INST]`` around each user
turn, no control ids besides BOS/EOS). ``tokenize_messages`` renders the template the
Instruct repositories publish (``MISTRAL_CHAT_TEMPLATE``) and encodes it as transformers
does (``torchtune.tokenizers.template_tokenizer``), so the ids are ``apply_chat_template``'s.
0.6.1's default ``prompt_template``, ``MistralChatTemplate``, named that same format: given
here it means the template itself (tags are never written twice). Any other prompt
template rewrites the messages before the template renders them.
"""

from typing import Any, List, Optional, Sequence, Tuple

from torchtune.data import Message
from torchtune.tokenizers import SentencePieceTokenizer
from torchtune.tokenizers._auto_tokenizer import template_tokenizer
from torchtune.tokenizers._prompt_template import MistralChatTemplate, resolve_prompt_template

MISTRAL_PROMPT_TEMPLATE = "torchtune.models.mistral.MistralChatTemplate"

# tokenizer_config.json of mistralai/Mistral-7B-Instruct-v0.1 (and v0.2), as published.
MISTRAL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the "
    "exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)


class MistralTokenizer:
    """A ``SentencePieceTokenizer`` with its builder's settings and Mistral's chat format:
    ``encode``, ``decode`` and the ids are the SentencePiece model's (BOS 1, EOS 2, pad 0).

    Args:
        path (str): the ``tokenizer.model`` file.
        max_seq_len (Optional[int]): the truncation length datasets use when they are given
            none, and the cut of ``tokenize_messages``; None for no limit.
        prompt_template (Optional[Any]): see ``resolve_prompt_template``; None or
            ``MistralChatTemplate``: the messages as they are.
    """

    def __init__(self, path: str, max_seq_len: Optional[int] = None,
                 prompt_template: Any = MISTRAL_PROMPT_TEMPLATE):
        self._base = SentencePieceTokenizer(path)
        self.max_seq_len = max_seq_len
        template = resolve_prompt_template(prompt_template)
        self.prompt_template = None if isinstance(template, MistralChatTemplate) else template
        self._chat = template_tokenizer(
            self._base, name="mistral_tokenizer", chat_template=MISTRAL_CHAT_TEMPLATE,
            control={}, bos_token="<s>", eos_token="</s>", max_seq_len=max_seq_len,
            prompt_template=self.prompt_template,
        )
        self.stop_tokens = [self._base.eos_id]

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

    def tokenize_messages(self, messages: Sequence[Message], add_end_tokens: bool = True, *,
                          max_tokens: Optional[int] = None) -> Tuple[List[int], List[bool]]:
        """The conversation in the published chat template (``ModelFolderTokenizer``'s
        ``tokenize_messages``): an optional system message, then user and assistant
        turns alternating; each assistant turn and its ``</s>`` are learned."""
        return self._chat.tokenize_messages(messages, add_end_tokens, max_tokens=max_tokens)


def mistral_tokenizer(path: str, max_seq_len: Optional[int] = None,
                      prompt_template: Any = MISTRAL_PROMPT_TEMPLATE) -> MistralTokenizer:
    """The Mistral SentencePiece tokenizer stored at ``path`` (torchtune 0.6.1's signature).

    Args:
        path (str): the ``tokenizer.model`` file.
        max_seq_len (Optional[int]): stored as ``max_seq_len``; None for no limit.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None; the default (``MistralChatTemplate``) and None both leave the
            messages to the chat template alone.

    Returns:
        MistralTokenizer: the tokenizer.
    """
    return MistralTokenizer(path, max_seq_len=max_seq_len, prompt_template=prompt_template)
