"""The Qwen 3 tokenizer: Qwen 2.5's vocabulary and ChatML, with thinking blocks.

Special tokens
--------------
The same ids as Qwen 2.5 (no BOS; pad ``<|endoftext|>`` 151643, ``<|im_start|>`` 151644,
eos ``<|im_end|>`` 151645; stop tokens [151645, 151643]), plus the added tokens
``<tool_response>`` 151665, ``</tool_response>`` 151666, ``<think>`` 151667 and
``</think>`` 151668. These four (like ``<tool_call>``) are *not* flagged special in
``tokenizer.json``: they are vocabulary words that ``encode`` matches in any text, as
transformers does, so thinking text written in content gets its single ids; they are
checked against the file, and ``decode(skip_special_tokens=True)`` keeps them.
``splits_at_spaces`` holds as for Qwen 2.5 (none of the added tokens contains a space).

The chat format, as Qwen 3's chat template renders it (``tools=None``)
---------------------------------------------------------------------
- No default system prompt (unlike Qwen 2.5).
- An assistant message's content may carry its reasoning: ``<think>...</think>answer``.
  As the template does, the text after the last ``</think>`` (``lstrip("\\n")``) is the
  answer and the text between ``<think>`` and the first ``</think>`` (trimmed of
  newlines) the reasoning.
- Assistant turns before the last user query (the last user message that is not a
  ``<tool_response>`` wrapper) are written without their reasoning: the template drops
  thinking from history.
- Assistant turns after it are written ``<think>\\n{reasoning}\\n</think>\\n\\n{answer}``
  when they have reasoning; the last message always is, so a final assistant turn
  without reasoning gets the empty block ``<think>\\n\\n</think>\\n\\n``, as the template
  writes it.
- The generation prompt: ``add_end_tokens=False`` with an empty assistant message last
  gives ``<|im_start|>assistant\\n``, followed by the empty think block
  ``<think>\\n\\n</think>\\n\\n`` when ``enable_thinking=False`` (the template's
  ``enable_thinking`` variable). ``add_end_tokens=False`` with a non-empty assistant
  message last leaves that turn, rendered as above, open.
- ``ipython`` messages as the template's ``tool`` role, as for Qwen 2.5.

Not supported: tools, ``tool_calls`` and ``reasoning_content`` fields (``Message`` has none).
"""

from typing import List, Optional, Sequence, Tuple

from torchtune.data import Message
from torchtune.models.qwen2._tokenizer import (
    AddedTokens,
    chatml_turn,
    ChatMLPart,
    encode_chatml,
    load_qwen_base,
    qwen_tokenizer_args,
    render_chatml_messages,
)
from torchtune.models.qwen2_5._tokenizer import QWEN2_5_ADDED_TOKENS, QWEN2_5_SPECIAL_IDS
from torchtune.tokenizers._prompt_template import apply_prompt_template, resolve_prompt_template
from torchtune.tokenizers._truncated import check_truncation_type

QWEN3_ADDED_IDS = {
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}

QWEN3_ADDED_TOKENS = QWEN2_5_ADDED_TOKENS + [(t, i, False) for t, i in QWEN3_ADDED_IDS.items()]

EMPTY_THINK = "<think>\n\n</think>\n\n"


class Qwen3Tokenizer:
    """Qwen 3's tokenizer, with the ChatML format of its chat template.

    It holds a ``HuggingFaceBaseTokenizer`` (``encode``, ``decode``, the ids) and renders
    conversations with the ChatML functions of ``torchtune/models/qwen2/_tokenizer.py``,
    writing thinking blocks as the module docstring says.

    Args: as ``Qwen2Tokenizer`` (no default system prompt, Qwen 3's added tokens), and
        enable_thinking (bool): the template's ``enable_thinking``: False adds the empty
            think block to the generation prompt, which tells the model not to think.

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: if the files are not a Qwen tokenizer with Qwen 3's added tokens.
    """

    def __init__(
        self,
        path: str,
        merges_file: Optional[str] = None,
        special_tokens: Optional[AddedTokens] = None,
        max_seq_len: Optional[int] = None,
        *,
        prompt_template=None,
        truncation_type: str = "right",
        enable_thinking: bool = True,
    ):
        self._base = load_qwen_base(
            path,
            merges_file,
            special_tokens,
            added_tokens=QWEN3_ADDED_TOKENS,
            required_ids={**QWEN2_5_SPECIAL_IDS, **QWEN3_ADDED_IDS},
            owner="Qwen3Tokenizer",
        )
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)
        self.truncation_type = check_truncation_type(truncation_type)
        self.default_system_prompt = None  # Qwen 3's template inserts none
        self.im_start_id = QWEN2_5_SPECIAL_IDS["<|im_start|>"]
        self.im_end_id = QWEN2_5_SPECIAL_IDS["<|im_end|>"]
        self.endoftext_id = QWEN2_5_SPECIAL_IDS["<|endoftext|>"]
        self.stop_tokens = [self.im_end_id, self.endoftext_id]
        self.think_start_id = QWEN3_ADDED_IDS["<think>"]
        self.think_end_id = QWEN3_ADDED_IDS["</think>"]
        self.enable_thinking = enable_thinking

    # ----- the base tokenizer's attributes and methods -----

    path = property(lambda self: self._base.path)
    bos_id = property(lambda self: self._base.bos_id)
    eos_id = property(lambda self: self._base.eos_id)
    pad_id = property(lambda self: self._base.pad_id)
    vocab_size = property(lambda self: self._base.vocab_size)
    splits_at_spaces = property(lambda self: self._base.splits_at_spaces)
    added_tokens = property(lambda self: self._base.added_tokens)
    special_tokens = property(lambda self: self._base.special_tokens)

    def token_to_id(self, token: str) -> Optional[int]:
        """``HuggingFaceBaseTokenizer.token_to_id``."""
        return self._base.token_to_id(token)

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
    ) -> List[int]:
        """``HuggingFaceBaseTokenizer.encode``: special-token text in ``text`` stays text."""
        return self._base.encode(text, add_bos, add_eos, trim_leading_whitespace)

    def encode_with_special(self, text: str) -> List[int]:
        """``HuggingFaceBaseTokenizer.encode_with_special``: for trusted text only."""
        return self._base.encode_with_special(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """``HuggingFaceBaseTokenizer.decode``."""
        return self._base.decode(ids, skip_special_tokens)

    # ----- the chat format -----

    def tokenize_messages(
        self,
        messages: Sequence[Message],
        add_end_tokens: bool = True,
        *,
        max_tokens: Optional[int] = None,
    ) -> Tuple[List[int], List[bool]]:
        """Tokenize a conversation as Qwen 3's chat template renders it (the module
        docstring); ids, mask and arguments as ``Qwen2Tokenizer.tokenize_messages``."""
        messages = apply_prompt_template(self.prompt_template, messages)
        return encode_chatml(
            self._base,
            render_qwen3(messages, add_end_tokens, self.enable_thinking),
            add_end_tokens=add_end_tokens,
            max_tokens=max_tokens,
            max_seq_len=self.max_seq_len,
            truncation_type=self.truncation_type,
        )


def render_qwen3(
    messages: Sequence[Message], add_end_tokens: bool, enable_thinking: bool
) -> List[List[ChatMLPart]]:
    """The ChatML turns of Qwen 3's template; an empty assistant message left open last
    is the template's ``add_generation_prompt``."""
    last = messages[-1] if messages else None
    if not add_end_tokens and last is not None and last.role == "assistant" and last.content == "":
        turns = render_chatml_messages(messages[:-1], True, qwen3_content)
        prompt = "" if enable_thinking else EMPTY_THINK
        turns.append(chatml_turn("assistant", prompt, last.masked, close=False))
        return turns
    return render_chatml_messages(messages, add_end_tokens, qwen3_content)


def qwen3_content(messages: Sequence[Message], i: int) -> str:
    """The text Qwen 3's template writes for message ``i``: an assistant's reasoning kept
    only after the last user query (``<think>\\n...\\n</think>\\n\\n`` before the answer)."""
    m = messages[i]
    if m.role != "assistant":
        return m.content
    content, reasoning = m.content, ""
    if "</think>" in content:
        reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1]
        reasoning = reasoning.lstrip("\n")
        content = content.split("</think>")[-1].lstrip("\n")
    is_last = i == len(messages) - 1
    if i > _last_query_index(messages) and (is_last or reasoning):
        return "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
    return content


def _last_query_index(messages: Sequence[Message]) -> int:
    """The template's ``ns.last_query_index``: the last user message that is not a tool
    response wrapped as ``<tool_response>...</tool_response>``."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.role == "user" and not (
            m.content.startswith("<tool_response>") and m.content.endswith("</tool_response>")
        ):
            return i
    return len(messages) - 1


def qwen3_tokenizer(
    path: str,
    merges_file: Optional[str] = None,
    special_tokens_path: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template=None,
    truncation_type: str = "right",
    enable_thinking: bool = True,
) -> Qwen3Tokenizer:
    """The Qwen 3 tokenizer (all sizes share it); the arguments of ``qwen2_5_tokenizer``.

    Args:
        path (str): the model's ``tokenizer.json``, or its ``vocab.json`` with ``merges_file``.
        merges_file (Optional[str]): ``merges.txt``, when ``path`` is a ``vocab.json``.
        special_tokens_path (Optional[str]): a ``tokenizer.json`` whose ``added_tokens`` are
            the special tokens; None for Qwen 3's 26.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this length.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None (``resolve_prompt_template``).
        truncation_type (str): "right" (keep the start) or "left" (keep the end).
        enable_thinking (bool): False adds the empty think block to generation prompts.

    Returns:
        Qwen3Tokenizer: no BOS, eos ``<|im_end|>`` 151645, pad ``<|endoftext|>`` 151643,
        stop tokens [151645, 151643], ``<think>`` 151667, ``</think>`` 151668.
    """
    return Qwen3Tokenizer(
        path,
        merges_file,
        qwen_tokenizer_args(special_tokens_path, truncation_type),
        max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
        enable_thinking=enable_thinking,
    )
