"""The Qwen 2 tokenizer, and the ChatML functions Qwen 2.5's and 3's share.

Files
-----
``path`` is the model's ``tokenizer.json``, or, as in torchtune 0.6.1 configs, its
``vocab.json`` with ``merges_file`` (``merges.txt``; the Hub repositories hold all three).
From the pair, ``byte_level_bpe_json`` has the ``tokenizers`` library read the BPE and puts
around it the stages Qwen's ``tokenizer.json`` defines (NFC, the split regex below,
byte-level), plus the added tokens at their ids: those of ``special_tokens_path`` (a
``tokenizer.json``, 0.6.1's meaning) or the family's fixed list (``added_tokens``). Both
ways give the same ids (tested on the real Qwen 2.5 files).

Special tokens
--------------
Qwen has no BOS (``add_bos_token: false``; ``bos_id`` is None and ``encode`` adds none).
``<|endoftext|>`` 151643 pads and ends base-model documents; ``<|im_end|>`` 151645 ends a
chat turn and is the Instruct models' EOS (``tokenizer_config.json``'s ``eos_token``), so
``eos_id`` is 151645 and ``stop_tokens`` is ``[151645, 151643]`` (generation stops at
either, as the models' ``generation_config.json`` lists). ``<|im_start|>`` 151644 opens a
turn. The ids are read from the file and checked against these.

Why ``splits_at_spaces`` holds for Qwen's pre-tokenizer
-------------------------------------------------------
``encode_truncated`` cuts a text before a space that follows a non-whitespace character.
Qwen's split regex is Llama 3's with ``\\p{N}`` in place of ``\\p{N}{1,3}``:
``(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*
|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+``. No alternative matches a non-whitespace character followed
by a space (a space only comes first, or in whitespace-only chunks), so no chunk spans the
cut; the only lookahead, ``(?!\\S)``, follows whitespace, and the character before the cut
is not whitespace, so the prefix alone splits into the same chunks (the argument of
``torchtune/models/llama3/_tokenizer.py``). The byte-level BPE merges within chunks. The
other stages do not reach across the cut either: the NFC normalizer composes a character
only with the combining marks after it, and U+0020 is a starter that composes with
nothing, so NFC(prefix) is a prefix of NFC(text); the added-token pass matches token
texts none of which contains a space, so no match spans the cut. So the prefix's ids are
a prefix of the text's ids, and ``splits_at_spaces`` is True (``encode_truncated`` also
drops a margin of ids at the cut's end).

The chat format (ChatML), as the published chat template renders it
-------------------------------------------------------------------
Each message is ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; content is used as is (the
template does not strip it). The text between two control ids is encoded as one text, as
encoding the rendered template does, so the ids are exactly the template's. Supported, with
``tools=None``:

- the default system prompt, inserted when the first message is not a system message (the
  template's rule): Qwen 2 Instruct's "You are a helpful assistant.", Qwen 2.5's "You are
  Qwen, created by Alibaba Cloud. You are a helpful assistant."; ``default_system_prompt=
  None`` turns it off (torchtune 0.6.1 inserted none);
- system, user and assistant messages, multi-turn, a system message after the first;
- ``ipython`` messages (tool results) as Qwen 2.5's template writes its ``tool`` role
  (Qwen 2's template has none): consecutive ones
  share one ``<|im_start|>user`` turn, each written as
  ``\\n<tool_response>\\n{content}\\n</tool_response>``;
- the generation prompt: ``add_end_tokens=False`` leaves the last message open, so an
  empty assistant message last gives the template's ``<|im_start|>assistant\\n``.

Not supported: tools in the system prompt and assistant ``tool_calls`` (``Message`` has
neither; tool-call text an assistant writes is encoded as its content).

Special-token text *inside* message content ("<|im_end|>" typed by a user) is encoded as
text, never as control ids (``HuggingFaceBaseTokenizer``), where the template would make
it a control id: the one place the ids differ from the template's, on purpose.

``prompt_template`` (0.6.1's argument) rewrites the messages first (text tags around each
role's content, ``torchtune.tokenizers.resolve_prompt_template``); ``max_seq_len`` cuts
``tokenize_messages`` output (``truncation_type`` "right" keeps the start and ends it with
``<|im_end|>``, "left" keeps the end).
"""

import re
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

from torchtune._errors import UserValueError
from torchtune.data import Message
from torchtune.tokenizers import encode_truncated, HuggingFaceBaseTokenizer
from torchtune.tokenizers._hf_tokenizer import (
    byte_level_bpe_json,
    read_added_tokens,
    read_text,
)
from torchtune.tokenizers._prompt_template import apply_prompt_template, resolve_prompt_template
from torchtune.tokenizers._truncated import check_truncation_type, truncate_to_max_seq_len

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

QWEN2_SPECIAL_IDS = {ENDOFTEXT: 151643, IM_START: 151644, IM_END: 151645}

# Qwen 2's added tokens after its 151,643 BPE tokens: (text, id, special).
QWEN2_ADDED_TOKENS = [(text, i, True) for text, i in QWEN2_SPECIAL_IDS.items()]

# The pre-tokenizer regex of Qwen's tokenizer.json (Qwen 2, 2.5 and 3 share it).
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

QWEN2_DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# A rendered turn: (control id, masked) and (text encoded as ordinary text, masked).
ChatMLPart = Tuple[Union[int, str], bool]
AddedTokens = Sequence[Tuple[str, int, bool]]
# The text written after ``{role}\\n`` for message i of a conversation.
ContentFn = Callable[[Sequence[Message], int], str]


def load_qwen_base(
    path: str,
    merges_file: Optional[str],
    special_tokens: Optional[AddedTokens],
    *,
    added_tokens: AddedTokens,
    required_ids: Mapping[str, int],
    owner: str,
) -> HuggingFaceBaseTokenizer:
    """The ``HuggingFaceBaseTokenizer`` of a Qwen ``tokenizer.json``, or of a ``vocab.json``
    + ``merges.txt`` pair with ``added_tokens`` (or ``special_tokens``) at their ids.

    Args:
        path (str): ``tokenizer.json``, or ``vocab.json`` (then with ``merges_file``).
        merges_file (Optional[str]): ``merges.txt`` for a ``vocab.json``.
        special_tokens (Optional[AddedTokens]): (text, id, special) from
            ``special_tokens_path``: added to a ``vocab.json`` in place of
            ``added_tokens``, checked against a ``tokenizer.json``'s own.
        added_tokens (AddedTokens): the family's added tokens, for a ``vocab.json``.
        required_ids (Mapping[str, int]): added tokens the file must have at these ids.
        owner (str): the tokenizer's name, for the error message.

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: if the files are not a Qwen tokenizer with the required ids.
    """
    text, is_vocab = _read_tokenizer_or_vocab(str(path), merges_file)
    if is_vocab:
        added = added_tokens if special_tokens is None else special_tokens
        text = byte_level_bpe_json(
            str(path), str(merges_file), split_pattern=QWEN_SPLIT_PATTERN, added_tokens=added
        )
    base = HuggingFaceBaseTokenizer(
        path,
        bos_id=None,
        eos_id=QWEN2_SPECIAL_IDS[IM_END],
        pad_id=QWEN2_SPECIAL_IDS[ENDOFTEXT],
        splits_at_spaces=True,  # argued in the module docstring
        tokenizer_json=text,
    )
    required = dict(required_ids)
    if special_tokens is not None and not is_vocab:
        required.update({t: i for t, i, _ in special_tokens})
    for token, want in required.items():
        got = base.added_tokens.get(token)
        if got != want:
            raise UserValueError(
                f"{base.path}: added token {token!r} has id {got}, not {want} as in {owner}"
            )
    return base


# ----- ChatML: what the chat template writes, as control ids and texts -----


def message_content(messages: Sequence[Message], i: int) -> str:
    """Qwen 2 / 2.5's content: the message's text as is (the template does not strip it)."""
    return messages[i].content


def chatml_turn(role: str, content: str, masked: bool, close: bool) -> List[ChatMLPart]:
    """``<|im_start|>{role}\\n{content}`` and, if ``close``, ``<|im_end|>\\n``."""
    parts: List[ChatMLPart] = [(QWEN2_SPECIAL_IDS[IM_START], masked), (f"{role}\n{content}", masked)]
    if close:
        parts += [(QWEN2_SPECIAL_IDS[IM_END], masked), ("\n", True)]
    return parts


def chatml_tool_part(messages: Sequence[Message], i: int, close: bool) -> List[ChatMLPart]:
    """The template's ``tool`` role: one user turn for a run of tool results."""
    m = messages[i]
    parts: List[ChatMLPart] = []
    text = ""
    if i == 0 or messages[i - 1].role != "ipython":
        parts.append((QWEN2_SPECIAL_IDS[IM_START], m.masked))
        text = "user"
    parts.append((f"{text}\n<tool_response>\n{m.content}\n</tool_response>", m.masked))
    last_of_run = i == len(messages) - 1 or messages[i + 1].role != "ipython"
    if last_of_run and close:
        parts += [(QWEN2_SPECIAL_IDS[IM_END], m.masked), ("\n", True)]
    return parts


def render_chatml_messages(
    messages: Sequence[Message], add_end_tokens: bool, content: ContentFn = message_content
) -> List[List[ChatMLPart]]:
    """The parts of each message's turn; the last is left open when not ``add_end_tokens``.

    Args:
        messages (Sequence[Message]): the conversation.
        add_end_tokens (bool): close the last turn.
        content (ContentFn): the text of message ``i`` (Qwen 3 writes its thinking).
    """
    turns: List[List[ChatMLPart]] = []
    n = len(messages)
    for i, m in enumerate(messages):
        close = add_end_tokens or i != n - 1
        if m.role == "ipython":
            turns.append(chatml_tool_part(messages, i, close))
        else:
            turns.append(chatml_turn(m.role, content(messages, i), m.masked, close))
    return turns


def default_system_turn(
    messages: Sequence[Message], default_system_prompt: Optional[str]
) -> List[List[ChatMLPart]]:
    """The masked system turn the template inserts when the first message is not a
    system message; none when ``default_system_prompt`` is None."""
    if default_system_prompt is None or (messages and messages[0].role == "system"):
        return []
    return [chatml_turn("system", default_system_prompt, True, close=True)]


def encode_chatml(
    base: HuggingFaceBaseTokenizer,
    turns: Sequence[Sequence[ChatMLPart]],
    *,
    add_end_tokens: bool,
    max_tokens: Optional[int],
    max_seq_len: Optional[int],
    truncation_type: str,
) -> Tuple[List[int], List[bool]]:
    """The ids and mask of rendered turns: control ids by id, the texts between two
    control ids encoded as one text (as encoding the rendered template does); then the
    ``max_tokens`` and ``max_seq_len`` cuts of ``tokenize_messages``."""
    parts = [p for turn in turns for p in turn]
    tokens: List[int] = []
    mask: List[bool] = []
    text, text_masked = "", False
    for part in parts + [None]:  # None flushes the last text
        if part is not None and isinstance(part[0], str):
            # Texts with no control id between them are one text in the template.
            text_masked = part[1] if not text else (text_masked or part[1])
            text += part[0]
            continue
        if text:
            if max_tokens is not None and len(tokens) >= max_tokens:
                break
            left = None if max_tokens is None else max_tokens - len(tokens)
            ids = encode_truncated(base, text, left, add_bos=False, add_eos=False)
            tokens += ids
            mask += [bool(text_masked)] * len(ids)
            text = ""
        if part is None or (max_tokens is not None and len(tokens) >= max_tokens):
            break
        tokens.append(part[0])
        mask.append(bool(part[1]))
    if max_tokens is not None:
        tokens, mask = tokens[:max_tokens], mask[:max_tokens]
    return truncate_to_max_seq_len(
        tokens,
        mask,
        max_seq_len,
        eos_id=base.eos_id,
        add_end_tokens=add_end_tokens,
        truncation_type=truncation_type,
    )


class Qwen2Tokenizer:
    """Qwen's byte-level BPE tokenizer, with the message-level ChatML format (Qwen 2 and,
    with its added tokens and default system prompt, Qwen 2.5: ``Qwen2_5Tokenizer``).

    It holds a ``HuggingFaceBaseTokenizer`` (``encode``, ``decode``, the ids) and adds
    the chat format.

    Args:
        path (str): the model's ``tokenizer.json``, or its ``vocab.json`` (then with
            ``merges_file``).
        merges_file (Optional[str]): ``merges.txt``, needed when ``path`` is a
            ``vocab.json``; unused with a ``tokenizer.json``, which holds the merges.
        special_tokens (Optional[AddedTokens]): (text, id, special) of the added tokens
            (``read_added_tokens(special_tokens_path)``): with a ``vocab.json`` they are
            added at their ids, with a ``tokenizer.json`` they must agree with its own;
            None: ``added_tokens``.
        max_seq_len (Optional[int]): ``tokenize_messages`` cuts its output to this many ids;
            None for no limit.
        prompt_template (Optional[Any]): see ``resolve_prompt_template``; None for none.
        truncation_type (str): "right" or "left", the end ``max_seq_len`` cuts from.
        default_system_prompt (Optional[str]): the system prompt inserted when a
            conversation does not start with a system message; None inserts none.
        added_tokens (AddedTokens): the family's added tokens, used with a ``vocab.json``
            when ``special_tokens`` is None (Qwen 2's three by default).

    Raises:
        FileNotFoundError: if a file does not exist.
        ValueError: if the files are not a Qwen tokenizer, or an argument is invalid.

    Example:
        >>> tok = qwen2_tokenizer("Qwen2-7B-Instruct/vocab.json", "Qwen2-7B-Instruct/merges.txt")
        >>> tok.encode("Hello world")
        [9707, 1879, 151645]
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
        default_system_prompt: Optional[str] = QWEN2_DEFAULT_SYSTEM_PROMPT,
        added_tokens: AddedTokens = QWEN2_ADDED_TOKENS,
    ):
        self._base = load_qwen_base(
            path,
            merges_file,
            special_tokens,
            added_tokens=added_tokens,
            required_ids=QWEN2_SPECIAL_IDS,
            owner="Qwen2Tokenizer",
        )
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)
        self.truncation_type = check_truncation_type(truncation_type)
        self.default_system_prompt = default_system_prompt
        self.im_start_id = QWEN2_SPECIAL_IDS[IM_START]
        self.im_end_id = QWEN2_SPECIAL_IDS[IM_END]
        self.endoftext_id = QWEN2_SPECIAL_IDS[ENDOFTEXT]
        self.stop_tokens = [self.im_end_id, self.endoftext_id]

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
        """Tokenize a conversation in ChatML, as the model's chat template renders it.

        The mask is True where the loss should be ignored: the default system prompt,
        every id of a message whose ``masked`` is True (by default all but assistant
        turns), and the ``\\n`` written after each ``<|im_end|>`` (template glue between
        turns, not something the model generates). An assistant turn's
        ``<|im_start|>assistant\\n``, content and ``<|im_end|>`` are learned. A run of
        tool results shares one turn; its texts, encoded as one, are masked if any is.

        Args:
            messages (Sequence[Message]): the conversation.
            add_end_tokens (bool): close the last message with ``<|im_end|>\\n``; False
                leaves it open (an empty assistant message last: the generation prompt).
            max_tokens (Optional[int]): return only the first this many ids (before the
                ``max_seq_len`` cut), encoding only what they need.

        Returns:
            Tuple[List[int], List[bool]]: the ids and the mask, of equal length.
        """
        messages = apply_prompt_template(self.prompt_template, messages)
        turns = default_system_turn(messages, self.default_system_prompt)
        turns += render_chatml_messages(messages, add_end_tokens)
        return encode_chatml(
            self._base,
            turns,
            add_end_tokens=add_end_tokens,
            max_tokens=max_tokens,
            max_seq_len=self.max_seq_len,
            truncation_type=self.truncation_type,
        )


# A tokenizer.json has a "model" object; in a vocab.json "model" is a word with an id.
_TOKENIZER_JSON_MODEL = re.compile(r'"model"\s*:\s*\{')


def _read_tokenizer_or_vocab(path: str, merges_file: Optional[str]) -> Tuple[str, bool]:
    """The text of ``path`` and whether it is a ``vocab.json`` (else a ``tokenizer.json``)."""
    text = read_text(path, "tokenizer.json or vocab.json")
    if _TOKENIZER_JSON_MODEL.search(text):
        return text, False
    if merges_file is None:
        raise UserValueError(
            f"{path} is not a tokenizer.json; if it is a vocab.json, pass merges_file "
            "(its merges.txt)"
        )
    return text, True


def qwen_tokenizer_args(
    special_tokens_path: Optional[str], truncation_type: str
) -> Optional[AddedTokens]:
    """The added tokens a builder's ``special_tokens_path`` names (None: the defaults)."""
    check_truncation_type(truncation_type)
    return None if special_tokens_path is None else read_added_tokens(str(special_tokens_path))


def qwen2_tokenizer(
    path: str,
    merges_file: Optional[str] = None,
    special_tokens_path: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template=None,
    truncation_type: str = "right",
    default_system_prompt: Optional[str] = QWEN2_DEFAULT_SYSTEM_PROMPT,
) -> Qwen2Tokenizer:
    """The Qwen 2 tokenizer (all sizes, base and Instruct), torchtune 0.6.1's signature.

    Args:
        path (str): the model's ``tokenizer.json``, or its ``vocab.json`` with ``merges_file``.
        merges_file (Optional[str]): ``merges.txt``, when ``path`` is a ``vocab.json``.
        special_tokens_path (Optional[str]): a ``tokenizer.json`` whose ``added_tokens`` are
            the special tokens; None for Qwen 2's three.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this length.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None (``resolve_prompt_template``).
        truncation_type (str): "right" (keep the start) or "left" (keep the end).
        default_system_prompt (Optional[str]): inserted when a conversation has no system
            message first, as Qwen 2 Instruct's chat template does; None for none (0.6.1).

    Returns:
        Qwen2Tokenizer: no BOS, eos ``<|im_end|>`` 151645, pad ``<|endoftext|>`` 151643,
        stop tokens [151645, 151643].
    """
    return Qwen2Tokenizer(
        path,
        merges_file,
        qwen_tokenizer_args(special_tokens_path, truncation_type),
        max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
        default_system_prompt=default_system_prompt,
    )
