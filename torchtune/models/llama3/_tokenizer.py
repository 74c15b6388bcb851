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

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from torchtune._errors import UserValueError
from torchtune.data import Message
from torchtune.tokenizers import encode_truncated, TikTokenBaseTokenizer
from torchtune.tokenizers._hf_tokenizer import read_added_tokens
from torchtune.tokenizers._prompt_template import apply_prompt_template, resolve_prompt_template
from torchtune.tokenizers._truncated import check_truncation_type, truncate_to_max_seq_len

# Meta's llama/tokenizer.py pattern (the same as tokenizer.json's pre-tokenizer).
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

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


class Llama3Tokenizer(TikTokenBaseTokenizer):
    """Meta's Llama 3 tokenizer, with the message-level chat format.

    Args:
        path (str): Meta's ``tokenizer.model`` (tiktoken ranks, ``base64 rank`` lines).
        max_seq_len (Optional[int]): ``tokenize_messages`` cuts its output to this many
            ids (keeping EOS last when it adds end tokens), as torchtune's does.
        special_tokens (Optional[Mapping[str, int]]): the names of the 256 special ids
            (e.g. a Llama 3.0 ``tokenizer.json``'s); None for ``LLAMA3_SPECIAL_TOKENS``.
            Only the names change: the control ids are fixed.
        prompt_template (Optional[Any]): see ``resolve_prompt_template``; None for none.
        truncation_type (str): "right" or "left", the end ``max_seq_len`` cuts from.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a rank file of 128,000 tokens, or the special
            tokens are not 256 names for 128000..128255.

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
    ):
        super().__init__(
            path,
            name="llama3",
            pattern=LLAMA3_SPLIT_PATTERN,
            bos_id=LLAMA3_SPECIAL_TOKENS["<|begin_of_text|>"],
            eos_id=LLAMA3_SPECIAL_TOKENS["<|end_of_text|>"],
            special_tokens=_check_special_tokens(special_tokens, path),
            pad_id=LLAMA3_SPECIAL_TOKENS["<|finetune_right_pad_id|>"],
            splits_at_spaces=True,  # proved in the module docstring
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

    def _load(self, ranks) -> None:
        if len(ranks) != NUM_BASE_TOKENS:
            raise UserValueError(
                f"{self.path} has {len(ranks)} tokens, not the {NUM_BASE_TOKENS} of Llama 3"
            )
        super()._load(ranks)

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
        content = message.content.strip()
        ids = [self.start_header_id] + self.encode(message.role, False, False)
        ids.append(self.end_header_id)
        left = None if max_tokens is None else max(max_tokens - len(ids), 0)
        ids += encode_truncated(self, "\n\n" + content, left, add_bos=False, add_eos=False)
        if add_end_tokens:
            ids.append(self.eot_id if message.eot else self.eom_id)
        return ids if max_tokens is None else ids[:max_tokens]

    def tokenize_messages(
        self,
        messages: Sequence[Message],
        add_end_tokens: bool = True,
        *,
        max_tokens: Optional[int] = None,
    ) -> Tuple[List[int], List[bool]]:
        """Tokenize a conversation in Llama 3's chat format.

        ``<|begin_of_text|>``, then each message as in ``tokenize_message``, then
        ``<|end_of_text|>`` if ``add_end_tokens``. The mask is True where the loss should
        be ignored: BOS and EOS, and every id of a message whose ``masked`` is True (by
        default all but assistant turns). No default system prompt is added: Llama 3.1's
        chat template adds a "Cutting Knowledge Date" one; pass it as a system message
        to reproduce that template.

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
        tokens, mask = [self.bos_id], [True]
        for i, message in enumerate(messages):
            if max_tokens is not None and len(tokens) >= max_tokens:
                break
            left = None if max_tokens is None else max_tokens - len(tokens)
            last = i == len(messages) - 1
            ids = self.tokenize_message(message, add_end_tokens or not last, left)
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
) -> Llama3Tokenizer:
    """The Llama 3 (3.0, 3.1, 3.2, 3.3) tokenizer from Meta's ``tokenizer.model``.

    torchtune 0.6.1's signature (``truncation_type`` from later releases).

    Args:
        path (str): the ``tokenizer.model`` file (``original/tokenizer.model`` on the Hub).
        special_tokens_path (Optional[str]): a Hugging Face ``tokenizer.json`` whose
            ``added_tokens`` name the 256 special ids; None for the Llama 3.1 names.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this length.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None (``resolve_prompt_template``).
        truncation_type (str): "right" (keep the start, EOS last) or "left" (keep the end).

    Returns:
        Llama3Tokenizer: the tokenizer (bos 128000, eos 128001, pad 128004, vocab 128256).
    """
    check_truncation_type(truncation_type)
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
    )
