from typing import Dict, List, Mapping, Optional, Tuple, Type, Union

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ChatFormat, Llama2ChatFormat, Message
from torchtune.datasets._instruct import resolve_class
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import (
    check_columns,
    load_hf_dataset,
    tokenize,
    TokenizedDataset,
    truncate,
)
from torchtune.tokenizers import encode_truncated, Tokenizer

# conversation style -> (role key, content key, {their role name: our role})
_STYLES = {
    "sharegpt": ("from", "value", {"system": "system", "human": "user", "gpt": "assistant"}),
    "openai": (
        "role",
        "content",
        {"system": "system", "user": "user", "assistant": "assistant", "ipython": "ipython"},
    ),
}


def _to_messages(conversation, style: str) -> List[Message]:
    role_key, content_key, roles = _STYLES[style]
    if not isinstance(conversation, list):
        raise ValueError(
            f"the conversation is of type {type(conversation).__name__}, not a list of turns"
        )
    messages = []
    for i, turn in enumerate(conversation):
        if not isinstance(turn, Mapping) or not isinstance(turn.get(content_key), str):
            raise ValueError(f"turn {i} has no text {content_key!r}")
        if turn.get(role_key) not in roles:
            raise ValueError(
                f"turn {i} has {role_key}={turn.get(role_key)!r}, expected one of "
                f"{', '.join(roles)}"
            )
        messages.append(Message(roles[turn[role_key]], turn[content_key]))
    return messages


class _ChatTransform:
    """Tokenizes conversations: through ``chat_format``'s text segments, or, when
    ``chat_format`` is None, through ``tokenizer.tokenize_messages`` (the tokenizer owns
    the format, as Llama 3's does)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat_format: Optional[Type[ChatFormat]],
        column: str,
        style: str,
        train_on_input: bool,
        max_seq_len: Optional[int],
    ):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.column = column
        self.style = style
        self.train_on_input = train_on_input
        self.max_seq_len = max_seq_len

    def _encode(self, segments: List[Message]) -> Tuple[List[int], List[int]]:
        """Ids and labels of the segments in order, only as many as ``truncate`` looks
        at: it keeps the first ``max_seq_len`` and needs to know only whether there are
        more, so ``max_seq_len + 1`` ids stand for the whole conversation, and segments
        past them are not encoded."""
        budget = None if self.max_seq_len is None else self.max_seq_len + 1
        tokens: List[int] = []
        labels: List[int] = []
        for m in segments:
            if budget is not None and len(tokens) >= budget:
                break
            is_user = m.role == "user"
            left = None if budget is None else budget - len(tokens)
            ids = encode_truncated(
                self.tokenizer, m.content, left, add_bos=is_user, add_eos=not is_user
            )
            tokens += ids
            if is_user and not self.train_on_input:
                labels += [CROSS_ENTROPY_IGNORE_IDX] * len(ids)
            else:
                labels += ids
        return tokens, labels

    def _tokenize_messages(self, messages: List[Message]) -> Tuple[List[int], List[int]]:
        """Ids and labels from the tokenizer's own chat format; as in ``_encode``, only
        the first ``max_seq_len + 1`` ids are made."""
        budget = None if self.max_seq_len is None else self.max_seq_len + 1
        # train_on_input learns every turn; otherwise only the assistant's
        messages = [
            Message(m.role, m.content, masked=m.role != "assistant" and not self.train_on_input)
            for m in messages
        ]
        tokens, mask = self.tokenizer.tokenize_messages(messages, max_tokens=budget)
        labels = [CROSS_ENTROPY_IGNORE_IDX if m else t for t, m in zip(tokens, mask)]
        return tokens, labels

    def __call__(self, batch: Mapping[str, list], indices: List[int]) -> Dict[str, list]:
        out: Dict[str, list] = {"tokens": [], "labels": [], "truncated": []}
        for conversation, row in zip(batch[self.column], indices):
            try:
                messages = _to_messages(conversation, self.style)
                if self.chat_format is not None:
                    segments = self.chat_format.format(messages)
            except ValueError as e:
                raise UserValueError(f"row {row}: column {self.column!r}: {e}") from None
            if self.chat_format is None:
                tokens, labels = self._tokenize_messages(messages)
            else:
                tokens, labels = self._encode(segments)
            tokens, labels, cut = truncate(
                tokens, labels, self.max_seq_len, self.tokenizer.eos_id
            )
            out["tokens"].append(tokens)
            out["labels"].append(labels)
            out["truncated"].append(cut)
        return out


def chat_dataset(
    tokenizer: Tokenizer,
    source: str,
    conversation_column: str = "conversations",
    conversation_style: str = "sharegpt",
    chat_format: Optional[Union[str, Type[ChatFormat]]] = None,
    max_seq_len: Optional[int] = None,
    train_on_input: bool = False,
    packed: bool = False,
    num_proc: int = 1,
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Multi-turn conversations in a chat format.

    Each record's ``conversation_column`` is a list of turns: ShareGPT style
    (``{"from": "system"|"human"|"gpt", "value": ...}``) or OpenAI style
    (``{"role": "system"|"user"|"assistant"|"ipython", "content": ...}``).

    The format: with ``chat_format`` None (the default) a tokenizer that has
    ``tokenize_messages`` (Llama 3's) formats the conversation itself, as in torchtune;
    the sample is its ids, labels ignored where its mask is True. Otherwise
    ``chat_format`` (``Llama2ChatFormat`` when None) turns the conversation into user and
    assistant text segments; user segments are encoded with BOS, assistant segments with
    EOS (for Llama 2 this reproduces Meta's ``chat_completion`` ids). By default only the
    assistant turns are learned. Only as much of a long conversation as
    the truncated sample keeps is encoded (``encode_truncated``). If no sample has a
    target left within ``max_seq_len`` the build fails; if some have none, their number
    is logged.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (str): Hub dataset name, or "json" with ``data_files``.
        conversation_column (str): the column holding the list of turns.
        conversation_style (str): "sharegpt" or "openai".
        chat_format (Optional[Union[str, Type[ChatFormat]]]): the text format class or
            its dotted path; None for the tokenizer's ``tokenize_messages`` if it has one,
            else ``Llama2ChatFormat``.
        max_seq_len (Optional[int]): truncate samples to this length (keeping EOS last).
        train_on_input (bool): also learn the user (and system and ipython) turns.
        packed (bool): pack into rows of exactly ``max_seq_len``.
        num_proc (int): processes for tokenizing.
        **load_dataset_kwargs: passed to ``datasets.load_dataset``.

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.
    """
    if conversation_style not in _STYLES:
        raise UserValueError(
            f"conversation_style {conversation_style!r} is not one of {', '.join(_STYLES)}"
        )
    if packed and max_seq_len is None:
        raise UserValueError("packed=True needs max_seq_len")
    if chat_format is not None:
        chat_format = resolve_class(chat_format, "chat_format")
    elif not callable(getattr(tokenizer, "tokenize_messages", None)):
        chat_format = Llama2ChatFormat
    ds = load_hf_dataset(source, **load_dataset_kwargs)
    check_columns(ds, [conversation_column], source)
    transform = _ChatTransform(
        tokenizer, chat_format, conversation_column, conversation_style, train_on_input, max_seq_len
    )
    name = f"chat_dataset({source!r})"
    remedy = "raise max_seq_len" if train_on_input else (
        "raise max_seq_len (the user turns fill it), or set train_on_input=True to learn "
        "the user turns too"
    )
    tokenized = tokenize(
        ds, transform, name=name, max_seq_len=max_seq_len, num_proc=num_proc, remedy=remedy
    )
    if packed:
        return PackedDataset(tokenized, max_seq_len, padding_idx=tokenizer.pad_id)
    return tokenized
