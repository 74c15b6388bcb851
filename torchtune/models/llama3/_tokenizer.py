"""The Llama 3 tokenizer: Meta's tiktoken BPE, its special tokens and its chat format.

Special tokens
--------------
The 256 ids 128000..128255 after the 128,000 BPE ranks, named as in Llama 3.1 (Meta's
``llama-models`` tokenizer.py and the Llama 3.1 Hugging Face ``tokenizer.json``): the
Llama 3.0 files call 128004, 128005, 128008 and 128010 ``<|reserved_special_token_2..5|>``,
and 3.1 gave four of them the names below; ids that both versions name agree, and a
reserved id carries no meaning, so one table serves both.

Why ``splits_at_spaces`` holds for Llama 3's split pattern
---------------------------------------------------------
``encode_truncated`` cuts a text before a space that follows a non-whitespace character.
The pattern's alternatives are: contractions (no space); ``[^\\r\\n\\p{L}\\p{N}]?\\p{L}+``
(a space only as its first character); ``\\p{N}{1,3}``; ``␣?[^\\s\\p{L}\\p{N}]+[\\r\\n]*``
(a space only first); and three whitespace-only ones. So no chunk holds a non-whitespace
character followed by a space: every match before the cut lies inside the prefix, the
only lookahead (``\\s+(?!\\S)``) looks at a character before the cut, and the prefix alone
splits into the same chunks. BPE merges within chunks, so the prefix's ids are a prefix
of the whole text's. Meta's long-text cuts (``split_long_text``) are made left to right
at positions counted from the start, so the prefix gets the same cuts plus its own end.
"""

from datetime import datetime
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torchtune._errors import UserValueError
from torchtune.data import Message
from torchtune.tokenizers import encode_truncated, TikTokenBaseTokenizer
from torchtune.tokenizers._hf_tokenizer import CL100K_SPLIT_PATTERN, read_added_tokens
from torchtune.tokenizers._prompt_template import apply_prompt_template, resolve_prompt_template
from torchtune.tokenizers._truncated import check_truncation_type, truncate_to_max_seq_len

# Meta's llama/tokenizer.py pattern (the same as tokenizer.json's pre-tokenizer): cl100k's.
LLAMA3_SPLIT_PATTERN = CL100K_SPLIT_PATTERN

NUM_BASE_TOKENS = 128_000
NUM_SPECIAL_TOKENS = 256

_NAMED = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|reserved_special_token_0|>": 128002,
    "<|reserved_special_token_1|>": 128003,
    "<|finetune_right_pad_id|>": 128004,
    "<|reserved_special_token_2|>": 128005,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
    "<|python_tag|>": 128010,
}
# The rest are reserved_3 .. reserved_247 at 128011 .. 128255.
LLAMA3_SPECIAL_TOKENS = {
    **_NAMED,
    **{
        f"<|reserved_special_token_{3 + i}|>": 128011 + i
        for i in range(NUM_SPECIAL_TOKENS - len(_NAMED))
    },
}

# ``chat_format`` values. The official Llama 3.1 and 3.3 Instruct chat templates open
# every conversation with a system turn that states the knowledge cutoff and a date
# (``date_string``, "26 Jul 2024" unless the caller sets it); Llama 3.2's template is the
# same but writes today's date (``strftime_now("%d %b %Y")``). Llama 3.0's template, and
# torchtune 0.6.1's format, write no such turn.
LLAMA3_1_CHAT_FORMAT = "llama3_1"
LLAMA3_2_CHAT_FORMAT = "llama3_2"
TORCHTUNE_061_CHAT_FORMAT = "torchtune_061"
LLAMA3_CHAT_FORMATS = (LLAMA3_1_CHAT_FORMAT, LLAMA3_2_CHAT_FORMAT, TORCHTUNE_061_CHAT_FORMAT)
LLAMA3_1_DATE_STRING = "26 Jul 2024"


def knowledge_cutoff_preamble(date_string: str) -> str:
    """The text the Llama 3.1/3.2/3.3 templates write before the system message."""
    return f"Cutting Knowledge Date: December 2023\nToday Date: {date_string}\n\n"


def resolve_date_string(chat_format: str, date_string: Optional[str]) -> Optional[str]:
    """The date the system turn states: ``date_string`` if given, else the format's own
    (None for ``torchtune_061``, which writes no system turn).

    Raises:
        UserValueError: on an unknown ``chat_format``, or a ``date_string`` given to
            ``torchtune_061``.
    """
    if chat_format not in LLAMA3_CHAT_FORMATS:
        raise UserValueError(f"chat_format: expected one of {list(LLAMA3_CHAT_FORMATS)}, got {chat_format!r}")
    if chat_format == TORCHTUNE_061_CHAT_FORMAT:
        if date_string is not None:
            raise UserValueError(
                "date_string: the torchtune_061 chat format writes no date; leave it out or "
                "use chat_format llama3_1 / llama3_2"
            )
        return None
    if date_string is not None:
        return date_string
    if chat_format == LLAMA3_2_CHAT_FORMAT:
        # What the template's strftime_now("%d %b %Y") gives, fixed when the tokenizer is
        # built so that every sample of a run states the same date.
        return datetime.now().strftime("%d %b %Y")
    return LLAMA3_1_DATE_STRING


class Llama3Tokenizer:
    """Meta's Llama 3 tokenizer, with the message-level chat format.

    It holds a ``TikTokenBaseTokenizer`` (the BPE, ``encode``/``decode``) and adds the
    chat format.

    Args:
        path (str): Meta's ``tokenizer.model`` (tiktoken ranks, ``base64 rank`` lines).
        max_seq_len (Optional[int]): ``tokenize_messages`` cuts its output to this many
            ids (keeping EOS last when it adds end tokens), as torchtune's does.
        special_tokens (Optional[Mapping[str, int]]): the names of the 256 special ids
            (e.g. a Llama 3.0 ``tokenizer.json``'s); None for ``LLAMA3_SPECIAL_TOKENS``.
            Only the names change: the control ids are fixed.
        prompt_template (Optional[Any]): see ``resolve_prompt_template``; None for none.
        truncation_type (str): "right" or "left", the end ``max_seq_len`` cuts from.
        chat_format (str): "llama3_1" (the official Llama 3.1 / 3.3 Instruct template:
            a system turn stating the knowledge cutoff and ``date_string`` always comes
            first), "llama3_2" (the same, dated today by default, as Llama 3.2's template)
            or "torchtune_061" (no such turn: torchtune 0.6.1's format, and Llama 3.0
            Instruct's template).
        date_string (Optional[str]): the date the system turn states ("26 Jul 2024"
            style); None for the format's default ("26 Jul 2024" for llama3_1, today for
            llama3_2).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a rank file of 128,000 tokens, the special tokens
            are not 256 names for 128000..128255, or ``chat_format`` is unknown.

    Example:
        >>> tok = llama3_tokenizer("Meta-Llama-3.1-8B-Instruct/original/tokenizer.model")
        >>> tok.encode("Hello world")
        [128000, 9906, 1917, 128001]
    """

    def __init__(
        self,
        path: str,
        max_seq_len: Optional[int] = None,
        special_tokens: Optional[Mapping[str, int]] = None,
        *,
        prompt_template=None,
        truncation_type: str = "right",
        chat_format: str = LLAMA3_1_CHAT_FORMAT,
        date_string: Optional[str] = None,
    ):
        self.date_string = resolve_date_string(chat_format, date_string)
        self.chat_format = chat_format
        self._base = TikTokenBaseTokenizer(
            path,
            name="llama3",
            pattern=LLAMA3_SPLIT_PATTERN,
            bos_id=LLAMA3_SPECIAL_TOKENS["<|begin_of_text|>"],
            eos_id=LLAMA3_SPECIAL_TOKENS["<|end_of_text|>"],
            special_tokens=_check_special_tokens(special_tokens, path),
            pad_id=LLAMA3_SPECIAL_TOKENS["<|finetune_right_pad_id|>"],
            splits_at_spaces=True,  # proved in the module docstring
            num_base_tokens=NUM_BASE_TOKENS,
        )
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)
        self.truncation_type = check_truncation_type(truncation_type)
        self.start_header_id = LLAMA3_SPECIAL_TOKENS["<|start_header_id|>"]
        self.end_header_id = LLAMA3_SPECIAL_TOKENS["<|end_header_id|>"]
        self.eot_id = LLAMA3_SPECIAL_TOKENS["<|eot_id|>"]
        self.eom_id = LLAMA3_SPECIAL_TOKENS["<|eom_id|>"]
        self.python_tag_id = LLAMA3_SPECIAL_TOKENS["<|python_tag|>"]
        self.stop_tokens = [self.eos_id, self.eot_id, self.eom_id]

    # ----- the base tokenizer's attributes and methods -----

    path = property(lambda self: self._base.path)
    name = property(lambda self: self._base.name)
    pattern = property(lambda self: self._base.pattern)
    special_tokens = property(lambda self: self._base.special_tokens)
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
        """``TikTokenBaseTokenizer.encode``: special-token text in ``text`` stays text."""
        return self._base.encode(text, add_bos, add_eos, trim_leading_whitespace)

    def encode_with_special(self, text: str) -> List[int]:
        """``TikTokenBaseTokenizer.encode_with_special``: for trusted text only."""
        return self._base.encode_with_special(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """``TikTokenBaseTokenizer.decode``."""
        return self._base.decode(ids, skip_special_tokens)

    # ----- the chat format -----

    def tokenize_message(
        self, message: Message, add_end_tokens: bool = True, max_tokens: Optional[int] = None
    ) -> List[int]:
        """``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>``.

        Content is stripped, as the official template's ``| trim`` and torchtune do.
        "\\n\\n" and the content are encoded together: the chat template's text between
        two special tokens is one ordinary-text encode, and this gives exactly its ids.

        Args:
            message (Message): the turn.
            add_end_tokens (bool): end with ``<|eot_id|>`` (``<|eom_id|>`` if not
                ``message.eot``); False leaves the turn open (a generation prompt).
            max_tokens (Optional[int]): return only the first this many ids, encoding
                only as much of the content as they need.

        Returns:
            List[int]: the ids.
        """
        end_id = (self.eot_id if message.eot else self.eom_id) if add_end_tokens else None
        return self._turn_ids(message.role, message.content.strip(), end_id, max_tokens)

    def _turn_ids(
        self, role: str, text: str, end_id: Optional[int], max_tokens: Optional[int]
    ) -> List[int]:
        """One turn with ``text`` written as is; ``end_id`` None leaves it open."""
        ids = [self.start_header_id] + self.encode(role, False, False)
        ids.append(self.end_header_id)
        left = None if max_tokens is None else max(max_tokens - len(ids), 0)
        ids += encode_truncated(self._base, "\n\n" + text, left, add_bos=False, add_eos=False)
        if end_id is not None:
            ids.append(end_id)
        return ids if max_tokens is None else ids[:max_tokens]

    def _system_turn(self, messages: Sequence[Message]) -> Tuple[Optional[Message], Sequence[Message]]:
        """The official templates' first turn, and the messages left after it: the
        preamble followed by the (trimmed) system message if the conversation has one."""
        if self.date_string is None:
            return None, messages
        preamble = knowledge_cutoff_preamble(self.date_string)
        if messages and messages[0].role == "system":
            first = messages[0]
            return Message("system", preamble + first.content.strip(), first.masked), messages[1:]
        return Message("system", preamble, True), messages

    def tokenize_messages(
        self,
        messages: Sequence[Message],
        add_end_tokens: bool = True,
        *,
        max_tokens: Optional[int] = None,
    ) -> Tuple[List[int], List[bool]]:
        """Tokenize a conversation in Llama 3's chat format.

        ``<|begin_of_text|>``, then (``chat_format`` llama3_1 / llama3_2) the system turn
        the official template writes: "Cutting Knowledge Date: December 2023\\nToday Date:
        {date_string}\\n\\n" followed by the conversation's own system message if it
        starts with one (masked as that message is; masked when there is none); then each
        message as in ``tokenize_message``, then ``<|end_of_text|>`` if ``add_end_tokens``
        (the one id the template does not write: it ends a training sample). The mask is
        True where the loss should be ignored: BOS and EOS, and every id of a message
        whose ``masked`` is True (by default all but assistant turns).

        Args:
            messages (Sequence[Message]): the conversation.
            add_end_tokens (bool): end the last message and add EOS; False for a
                generation prompt (the last message, e.g. an empty assistant turn, stays
                open).
            max_tokens (Optional[int]): return only the first this many ids (before the
                ``max_seq_len`` cut), encoding only what they need; for datasets that
                truncate samples themselves.

        Returns:
            Tuple[List[int], List[bool]]: the ids and the mask, of equal length.
        """
        messages = apply_prompt_template(self.prompt_template, messages)
        system, messages = self._system_turn(messages)
        # (message, text written as is)
        turns = [(m, m.content.strip()) for m in messages]
        if system is not None:
            turns.insert(0, (system, system.content))
        tokens, mask = [self.bos_id], [True]
        for i, (message, text) in enumerate(turns):
            if max_tokens is not None and len(tokens) >= max_tokens:
                break
            left = None if max_tokens is None else max_tokens - len(tokens)
            close = add_end_tokens or i != len(turns) - 1
            end_id = (self.eot_id if message.eot else self.eom_id) if close else None
            ids = self._turn_ids(message.role, text, end_id, left)
            tokens += ids
            mask += [bool(message.masked)] * len(ids)
        if add_end_tokens:
            tokens.append(self.eos_id)
            mask.append(True)
        if max_tokens is not None:
            tokens, mask = tokens[:max_tokens], mask[:max_tokens]
        return truncate_to_max_seq_len(
            tokens,
            mask,
            self.max_seq_len,
            eos_id=self.eos_id,
            add_end_tokens=add_end_tokens,
            truncation_type=self.truncation_type,
        )


def _check_special_tokens(special_tokens: Optional[Mapping[str, int]], where) -> Dict[str, int]:
    """``special_tokens`` if it names exactly the ids 128000..128255, else a one-line error."""
    if special_tokens is None:
        return dict(LLAMA3_SPECIAL_TOKENS)
    ids = sorted(special_tokens.values())
    want = list(range(NUM_BASE_TOKENS, NUM_BASE_TOKENS + NUM_SPECIAL_TOKENS))
    if ids != want:
        raise UserValueError(
            f"{where}: the special tokens must name each id {want[0]}..{want[-1]} once, as "
            f"Llama 3's do; got {len(ids)} tokens with ids {ids[:1]}..{ids[-1:]}"
        )
    return dict(special_tokens)


def llama3_tokenizer(
    path: str,
    special_tokens_path: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template=None,
    truncation_type: str = "right",
    chat_format: str = LLAMA3_1_CHAT_FORMAT,
    date_string: Optional[str] = None,
) -> Llama3Tokenizer:
    """The Llama 3 (3.0, 3.1, 3.2, 3.3) tokenizer from Meta's ``tokenizer.model``.

    torchtune 0.6.1's signature (``truncation_type`` from later releases), plus the chat
    format: by default ``tokenize_messages`` writes the official Llama 3.1 / 3.3 Instruct
    template's ids, which 0.6.1 did not (``chat_format="torchtune_061"`` for its ids).

    Args:
        path (str): the ``tokenizer.model`` file (``original/tokenizer.model`` on the Hub).
        special_tokens_path (Optional[str]): a Hugging Face ``tokenizer.json`` whose
            ``added_tokens`` name the 256 special ids; None for the Llama 3.1 names.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this length.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None (``resolve_prompt_template``).
        truncation_type (str): "right" (keep the start, EOS last) or "left" (keep the end).
        chat_format (str): "llama3_1" (Llama 3.1 and 3.3 Instruct's template: a first
            system turn "Cutting Knowledge Date: December 2023\\nToday Date:
            {date_string}\\n\\n" + the system message, if any), "llama3_2" (Llama 3.2's:
            the same, dated today unless ``date_string`` says otherwise) or
            "torchtune_061" (no such turn: torchtune 0.6.1's ids, and Llama 3.0 Instruct's
            template).
        date_string (Optional[str]): the date in the system turn, e.g. "26 Jul 2024";
            None for the format's default ("26 Jul 2024" for llama3_1, today for llama3_2).

    Returns:
        Llama3Tokenizer: the tokenizer (bos 128000, eos 128001, pad 128004, vocab 128256).
    """
    check_truncation_type(truncation_type)
    resolve_date_string(chat_format, date_string)  # a bad format fails before the file is read
    special_tokens = None
    if special_tokens_path is not None:
        special_tokens = {t: i for t, i, _ in read_added_tokens(str(special_tokens_path))}
        special_tokens = _check_special_tokens(special_tokens, special_tokens_path)
    return Llama3Tokenizer(
        path,
        max_seq_len=max_seq_len,
        special_tokens=special_tokens,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
        chat_format=chat_format,
        date_string=date_string,
    )
