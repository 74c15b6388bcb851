import inspect
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Type, Union

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ChatFormat, Llama2ChatFormat, Message
from torchtune.datasets._packed import PackedDataset
from torchtune.datasets._tokenized import (
    check_columns,
    load_hf_dataset,
    not_text,
    pack_length,
    resolve_class,
    resolve_max_seq_len,
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


class ToMessages:
    """One record -> its conversation as ``Message``s, masked as torchtune 0.6.1's message
    transforms mask them: every turn but the assistant's unless ``train_on_input``, and
    always a ``new_system_prompt`` (which replaces the record's own system turns).

    Styles: "sharegpt" and "openai" read a list of turns from ``columns["conversations"]``;
    "input_output" makes a user turn of ``columns["input"]`` and an assistant turn of
    ``columns["output"]`` (0.6.1's ``InputOutputToMessages``).

    Args:
        style (str): "sharegpt", "openai" or "input_output".
        columns (Dict[str, str]): role of a column -> its name in the dataset.
        train_on_input (bool): learn the turns that are not the assistant's.
        new_system_prompt (Optional[str]): a system turn to put first.
    """

    def __init__(
        self,
        style: str,
        columns: Dict[str, str],
        train_on_input: bool,
        new_system_prompt: Optional[str] = None,
    ):
        self.style = style
        self.columns = columns
        self.train_on_input = train_on_input
        self.new_system_prompt = new_system_prompt

    def _message(self, role: str, content: str) -> Message:
        return Message(role, content, masked=role != "assistant" and not self.train_on_input)

    def __call__(self, batch: Mapping[str, list], j: int) -> List[Message]:
        """The messages of row ``j`` of ``batch``; ValueError naming the column if bad."""
        messages = []
        if self.new_system_prompt is not None:
            messages.append(Message("system", self.new_system_prompt, masked=True))
        if self.style == "input_output":
            for role, key in (("user", "input"), ("assistant", "output")):
                value = batch[self.columns[key]][j]
                if not isinstance(value, str):
                    raise ValueError(f"column {self.columns[key]!r} is {not_text(value)}")
                messages.append(self._message(role, value))
            return messages
        column = self.columns["conversations"]
        conversation = batch[column][j]
        role_key, content_key, roles = _STYLES[self.style]
        if not isinstance(conversation, list):
            raise ValueError(
                f"column {column!r}: the conversation is of type "
                f"{type(conversation).__name__}, not a list of turns"
            )
        for i, turn in enumerate(conversation):
            if not isinstance(turn, Mapping) or not isinstance(turn.get(content_key), str):
                raise ValueError(f"column {column!r}: turn {i} has no text {content_key!r}")
            if turn.get(role_key) not in roles:
                raise ValueError(
                    f"column {column!r}: turn {i} has {role_key}={turn.get(role_key)!r}, "
                    f"expected one of {', '.join(roles)}"
                )
            role = roles[turn[role_key]]
            if role == "system" and self.new_system_prompt is not None:
                continue  # replaced, as in 0.6.1
            messages.append(self._message(role, turn[content_key]))
        return messages


class _ChatTransform:
    """Tokenizes conversations: through ``chat_format``'s text segments, or, when
    ``chat_format`` is None, through ``tokenizer.tokenize_messages`` (the tokenizer owns
    the format, as Llama 3's does)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat_format: Optional[Type[ChatFormat]],
        to_messages: ToMessages,
        train_on_input: bool,
        max_seq_len: Optional[int],
    ):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.to_messages = to_messages
        self.train_on_input = train_on_input
        self.max_seq_len = max_seq_len
        self.pass_max_tokens = chat_format is None and (
            "max_tokens" in inspect.signature(tokenizer.tokenize_messages).parameters
        )

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
        """Ids and labels from the tokenizer's own chat format (each message's ``masked``
        says whether it is learned); as in ``_encode``, only the first
        ``max_seq_len + 1`` ids are made when the tokenizer can stop early."""
        kwargs = {}
        if self.pass_max_tokens and self.max_seq_len is not None:
            kwargs["max_tokens"] = self.max_seq_len + 1
        tokens, mask = self.tokenizer.tokenize_messages(messages, **kwargs)
        labels = [CROSS_ENTROPY_IGNORE_IDX if m else t for t, m in zip(tokens, mask)]
        return list(tokens), labels

    def __call__(self, batch: Mapping[str, list], indices: List[int]) -> Dict[str, list]:
        out: Dict[str, list] = {"tokens": [], "labels": [], "truncated": []}
        for j, row in enumerate(indices):
            try:
                messages = self.to_messages(batch, j)
                if self.chat_format is not None:
                    segments = self.chat_format.format(messages)
            except ValueError as e:
                raise UserValueError(f"row {row}: {e}") from None
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


def messages_dataset(
    name: str,
    tokenizer: Tokenizer,
    source: Optional[str],
    to_messages: ToMessages,
    *,
    chat_format: Optional[Union[str, Type[ChatFormat]]] = None,
    max_seq_len: Optional[int] = None,
    packed: bool = False,
    num_proc: int = 1,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
    what_fills: str = "the user turns",
    **load_dataset_kwargs,
) -> Union[TokenizedDataset, PackedDataset]:
    """Load, filter, turn each record into messages with ``to_messages``, tokenize in
    the chat format, truncate and optionally pack: what ``chat_dataset``,
    ``instruct_dataset`` without a template and the builders over them share.

    ``max_seq_len`` None means the tokenizer's ``max_seq_len`` (torchtune 0.6.1), and no
    limit if it has none; ``packed`` needs one of the two.
    """
    max_seq_len = resolve_max_seq_len(tokenizer, max_seq_len)
    if packed:
        pack_length(name, max_seq_len)
    if chat_format is not None:
        chat_format = resolve_class(chat_format, "chat_format")
    elif not callable(getattr(tokenizer, "tokenize_messages", None)):
        chat_format = Llama2ChatFormat
    ds = load_hf_dataset(source, split=split, filter_fn=filter_fn, **load_dataset_kwargs)
    check_columns(ds, list(to_messages.columns.values()), source)
    transform = _ChatTransform(
        tokenizer, chat_format, to_messages, to_messages.train_on_input, max_seq_len
    )
    remedy = "raise max_seq_len" if to_messages.train_on_input else (
        f"raise max_seq_len ({what_fills} fill it), or set train_on_input=True to learn "
        f"{what_fills} too"
    )
    tokenized = tokenize(
        ds, transform, name=name, max_seq_len=max_seq_len, num_proc=num_proc, remedy=remedy
    )
    if packed:
        return PackedDataset(tokenized, max_seq_len, padding_idx=tokenizer.pad_id)
    return tokenized


def chat_dataset(
    tokenizer: Tokenizer,
    source: Optional[str] = None,
    conversation_column: str = "conversations",
    conversation_style: str = "sharegpt",
    chat_format: Optional[Union[str, Type[ChatFormat]]] = None,
    max_seq_len: Optional[int] = None,
    train_on_input: bool = False,
    packed: bool = False,
    num_proc: int = 1,
    *,
    new_system_prompt: Optional[str] = None,
    filter_fn: Optional[Callable] = None,
    split: str = "train",
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

    torchtune 0.6.1's signature ``chat_dataset(tokenizer, *, source, conversation_column,
    conversation_style, train_on_input=False, new_system_prompt=None, packed=False,
    filter_fn=None, split="train", **load_dataset_kwargs)`` works unchanged, with its
    meaning: ``new_system_prompt`` replaces the records' system turns by one system turn
    (never learned), ``filter_fn`` drops records before tokenizing, ``split`` may slice
    ("train[:10%]"), and without ``max_seq_len`` the tokenizer's ``max_seq_len``
    truncates (to exactly that many tokens, EOS last) and is the packed row length. The
    ``chat_format``, ``max_seq_len`` and ``num_proc`` arguments are this library's.
    Differences: a sample cut by truncation ends in EOS with the ignore label (0.6.1
    learned it when the cut fell in an assistant turn); with ``Llama2ChatFormat`` a
    system turn is folded into the first user segment and is learned with it when
    ``train_on_input``.

    Args:
        tokenizer (Tokenizer): the tokenizer.
        source (Optional[str]): Hub dataset name, or "json" with ``data_files``;
            required.
        conversation_column (str): the column holding the list of turns.
        conversation_style (str): "sharegpt" or "openai".
        chat_format (Optional[Union[str, Type[ChatFormat]]]): the text format class or
            its dotted path; None for the tokenizer's ``tokenize_messages`` if it has one,
            else ``Llama2ChatFormat``.
        max_seq_len (Optional[int]): truncate samples to this length (keeping EOS last);
            None: ``tokenizer.max_seq_len`` if set, else no limit.
        train_on_input (bool): also learn the user (and system and ipython) turns.
        packed (bool): pack into rows of exactly ``max_seq_len`` (or the tokenizer's).
        num_proc (int): processes for tokenizing.
        new_system_prompt (Optional[str]): system prompt that replaces the records' own.
        filter_fn (Optional[Callable]): keep the records for which it returns True.
        split (str): the split to load, or a slice of it.
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (``data_files``,
            ``name``, ``cache_dir`` ...).

    Returns:
        Union[TokenizedDataset, PackedDataset]: the items.

    Raises:
        UserValueError: for a missing ``source``, an unknown style or split, a missing
            column, a bad record (naming its row), or ``packed`` without a row length.
    """
    if conversation_style not in _STYLES:
        raise UserValueError(
            f"conversation_style {conversation_style!r} is not one of {', '.join(_STYLES)}"
        )
    to_messages = ToMessages(
        conversation_style, {"conversations": conversation_column}, train_on_input,
        new_system_prompt,
    )
    return messages_dataset(
        f"chat_dataset({source!r})", tokenizer, source, to_messages,
        chat_format=chat_format, max_seq_len=max_seq_len, packed=packed, num_proc=num_proc,
        filter_fn=filter_fn, split=split, **load_dataset_kwargs,
    )
