"""Preference pairs (prompt, chosen answer, rejected answer) for DPO and its relatives."""

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, Union

from torch.utils.data import Dataset

from torchtune._errors import UserValueError
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ChatFormat, Llama2ChatFormat, Message
from torchtune.datasets._tokenized import check_columns, load_hf_dataset, resolve_class, truncate
from torchtune.tokenizers import Tokenizer, encode_truncated

log = logging.getLogger(__name__)

# role key, content key, {their role name: ours}; a turn's keys say which style it is in
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_OPENAI_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "ipython": "ipython"}
_STYLES = (("from", "value", _SHAREGPT_ROLES), ("role", "content", _OPENAI_ROLES))
_ITEM_KEYS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


def _to_message(turn: Any, where: str) -> Message:
    if isinstance(turn, Mapping):
        for role_key, content_key, roles in _STYLES:
            if role_key in turn and isinstance(turn.get(content_key), str):
                if turn[role_key] not in roles:
                    raise ValueError(f"{where} has {role_key}={turn[role_key]!r}, expected one of {', '.join(roles)}")
                return Message(roles[turn[role_key]], turn[content_key])
    raise ValueError(f"{where} is not a turn ({{'from', 'value'}} or {{'role', 'content'}})")


def _to_messages(value: Any, where: str) -> List[Message]:
    """A column value as messages: a string is one user (prompt) or assistant (answer)
    turn, set by the caller; a mapping is one turn; a list is several."""
    if isinstance(value, Mapping):
        return [_to_message(value, where)]
    if isinstance(value, list):
        return [_to_message(t, f"{where} turn {i}") for i, t in enumerate(value)]
    raise ValueError(f"{where} is {'missing' if value is None else type(value).__name__}, not text or turns")


def _split_answer(value: Any, where: str) -> Tuple[List[Message], Message]:
    """(turns before the final answer, the final answer) of a chosen or rejected value."""
    if isinstance(value, str):
        return [], Message("assistant", value)
    messages = _to_messages(value, where)
    if not messages or messages[-1].role != "assistant":
        raise ValueError(f"{where} does not end with an assistant turn")
    return messages[:-1], messages[-1]


class _PreferenceTransform:
    """Batched ``map`` function: record -> chosen and rejected ids and labels, the shared
    prompt masked, only the final answers as targets."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        chat_format: Optional[Type[ChatFormat]],
        columns: Dict[str, str],
        max_seq_len: Optional[int],
        new_system_prompt: Optional[str],
    ):
        self.tokenizer = tokenizer
        self.chat_format = chat_format
        self.columns = columns
        self.max_seq_len = max_seq_len
        self.new_system_prompt = new_system_prompt

    def _messages(self, record: Mapping[str, Any]) -> Tuple[List[Message], Message, Message]:
        prompt: List[Message] = []
        if "prompt" in self.columns:
            value = record[self.columns["prompt"]]
            prompt = [Message("user", value)] if isinstance(value, str) else _to_messages(value, "prompt")
        chosen_before, chosen = _split_answer(record[self.columns["chosen"]], "chosen")
        rejected_before, rejected = _split_answer(record[self.columns["rejected"]], "rejected")
        if chosen_before != rejected_before:
            raise ValueError("chosen and rejected differ before their final answer (the prompt must be shared)")
        prompt += chosen_before
        if self.new_system_prompt is not None:
            prompt = [Message("system", self.new_system_prompt)] + [m for m in prompt if m.role != "system"]
        if not any(m.role == "user" for m in prompt):
            raise ValueError("has no prompt (no user turn before the answers)")
        return prompt, chosen, rejected

    def _encode(self, prompt: List[Message], answer: Message) -> Tuple[List[int], List[int]]:
        """Ids and labels of prompt + answer, the first ``max_seq_len + 1`` at most (what
        ``truncate`` looks at); labels only on the answer."""
        budget = None if self.max_seq_len is None else self.max_seq_len + 1
        if self.chat_format is None:
            messages = [Message(m.role, m.content, masked=True) for m in prompt]
            messages.append(Message("assistant", answer.content, masked=False))
            tokens, mask = self.tokenizer.tokenize_messages(messages, max_tokens=budget)
            return tokens, [CROSS_ENTROPY_IGNORE_IDX if m else t for t, m in zip(tokens, mask)]
        segments = self.chat_format.format(prompt + [answer])
        tokens: List[int] = []
        labels: List[int] = []
        for i, seg in enumerate(segments):
            if budget is not None and len(tokens) >= budget:
                break
            is_user = seg.role == "user"
            left = None if budget is None else budget - len(tokens)
            ids = encode_truncated(self.tokenizer, seg.content, left, add_bos=is_user, add_eos=not is_user)
            tokens += ids
            is_answer = i == len(segments) - 1
            labels += ids if is_answer else [CROSS_ENTROPY_IGNORE_IDX] * len(ids)
        return tokens, labels

    def __call__(self, batch: Mapping[str, list], indices: List[int]) -> Dict[str, list]:
        out: Dict[str, list] = {k: [] for k in (*_ITEM_KEYS, "truncated", "dropped")}
        for j, row in enumerate(indices):
            record = {c: batch[c][j] for c in self.columns.values()}
            try:
                prompt, chosen, rejected = self._messages(record)
                pair = [self._encode(prompt, chosen), self._encode(prompt, rejected)]
            except ValueError as e:
                raise UserValueError(f"row {row}: {e}") from None
            # Both sequences start with the same prompt ids and are cut at the same
            # max_seq_len, so the prompt/answer boundary is the same in both.
            cut = [truncate(t, lab, self.max_seq_len, self.tokenizer.eos_id) for t, lab in pair]
            # A sequence with no target left (the prompt fills max_seq_len) gives a pair
            # the loss cannot compare: it is dropped, and counted.
            empty = any(all(x == CROSS_ENTROPY_IGNORE_IDX for x in lab[1:]) for _, lab, _ in cut)
            for prefix, (tokens, labels, _) in zip(("chosen", "rejected"), cut):
                out[f"{prefix}_input_ids"].append(tokens)
                out[f"{prefix}_labels"].append(labels)
            out["truncated"].append(cut[0][2] or cut[1][2])
            out["dropped"].append(empty)
        return out


class PreferenceDataset(Dataset):
    """Map-style dataset of tokenized pairs: items ``{"chosen_input_ids", "chosen_labels",
    "rejected_input_ids", "rejected_labels"}`` (lists of ints, as in torchtune 0.6.1),
    backed by an Arrow table. Build it with ``preference_dataset``.

    Args:
        hf_dataset (datasets.Dataset): has the four list columns.
    """

    def __init__(self, hf_dataset: "datasets.Dataset"):  # noqa: F821
        self._data = hf_dataset

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> Dict[str, List[int]]:
        row = self._data[index]
        return {k: row[k] for k in _ITEM_KEYS}


def preference_dataset(
    tokenizer: Tokenizer,
    source: str,
    column_map: Optional[Dict[str, str]] = None,
    chat_format: Optional[Union[str, Type[ChatFormat]]] = None,
    max_seq_len: Optional[int] = None,
    new_system_prompt: Optional[str] = None,
    num_proc: int = 1,
    **load_dataset_kwargs,
) -> PreferenceDataset:
    """Preference pairs: a prompt, a chosen answer and a rejected answer.

    The columns (names after ``column_map``, which maps "prompt", "chosen", "rejected" to
    the dataset's own) may be laid out as:

    - ``prompt`` / ``chosen`` / ``rejected`` text (Stack Exchange paired, UltraFeedback
      binarized's strings);
    - ``conversations`` (or ``prompt``) as a list of turns, with ``chosen`` / ``rejected``
      each one assistant turn (ShareGPT preference sets such as LLaMA-Factory's
      ``dpo_en_demo``), multi-turn;
    - no prompt column, ``chosen`` / ``rejected`` each a whole conversation ending in the
      answer (Anthropic HH-RLHF standardised); everything before the last turn must agree
      and is the prompt.

    Turns are ShareGPT (``{"from": "system"|"human"|"gpt", "value"}``) or OpenAI
    (``{"role", "content"}``) style. The prompt (every turn before the final answer, earlier
    assistant turns included) is masked in the labels; only the final answer is a target.
    The model family's chat format applies as in ``chat_dataset``: the tokenizer's
    ``tokenize_messages`` when it has one and ``chat_format`` is None, else ``chat_format``
    (``Llama2ChatFormat`` by default). Each sequence is cut to ``max_seq_len`` as
    ``chat_dataset`` cuts (EOS kept last); a pair in which either answer keeps no target
    token is dropped, and their number logged.

    Args:
        tokenizer (Tokenizer): the model's tokenizer.
        source (str): Hub dataset name, or "json" / "csv" / "parquet" with ``data_files``.
        column_map (Optional[Dict[str, str]]): {"prompt" | "chosen" | "rejected": column};
            by default "chosen" and "rejected", and "prompt" or else "conversations" as the
            prompt if the dataset has such a column.
        chat_format (Optional[Union[str, Type[ChatFormat]]]): text chat format, or None for
            the tokenizer's own (see above).
        max_seq_len (Optional[int]): length limit of each sequence; None: the tokenizer's
            ``max_seq_len`` if it has one, else no limit.
        new_system_prompt (Optional[str]): replace any system turn with this one.
        num_proc (int): processes for tokenizing.
        **load_dataset_kwargs: passed to ``datasets.load_dataset`` (``data_files``, ``split`` ...).

    Returns:
        PreferenceDataset: the pairs that have an answer on both sides.

    Raises:
        UserValueError: a column is missing, a row is malformed (the message names the row),
            or no pair keeps an answer token within ``max_seq_len``.

    Example::

        dataset:
          _component_: torchtune.datasets.preference_dataset
          source: json
          data_files: tests/assets/dpo_en_demo_60.json
          max_seq_len: 512
    """
    if chat_format is not None:
        chat_format = resolve_class(chat_format, "chat_format")
    elif not callable(getattr(tokenizer, "tokenize_messages", None)):
        chat_format = Llama2ChatFormat
    if max_seq_len is None:
        max_seq_len = getattr(tokenizer, "max_seq_len", None)
    ds = load_hf_dataset(source, **load_dataset_kwargs)
    columns = dict(column_map or {})
    unknown = set(columns) - {"prompt", "chosen", "rejected"}
    if unknown:
        raise UserValueError(f"column_map: unknown key {sorted(unknown)[0]!r} (expected prompt, chosen, rejected)")
    columns.setdefault("chosen", "chosen")
    columns.setdefault("rejected", "rejected")
    if "prompt" not in columns:
        for name in ("prompt", "conversations"):
            if name in ds.column_names:
                columns["prompt"] = name
                break
    check_columns(ds, list(columns.values()), source)
    return _tokenize_pairs(
        ds, _PreferenceTransform(tokenizer, chat_format, columns, max_seq_len, new_system_prompt),
        name=f"preference_dataset({source!r})", max_seq_len=max_seq_len, num_proc=num_proc,
    )


def _tokenize_pairs(
    ds: "datasets.Dataset",  # noqa: F821
    transform: _PreferenceTransform,
    *,
    name: str,
    max_seq_len: Optional[int],
    num_proc: int,
) -> PreferenceDataset:
    """Tokenize with ``ds.map`` (cached on disk), log truncated pairs, drop and count the
    pairs without an answer token, and raise if none is left."""
    import datasets

    ids = datasets.Sequence(datasets.Value("int32"))
    features = datasets.Features(
        {**{k: ids for k in _ITEM_KEYS}, "truncated": datasets.Value("bool"), "dropped": datasets.Value("bool")}
    )
    tokenized = ds.map(
        transform, batched=True, with_indices=True, remove_columns=ds.column_names,
        features=features, num_proc=num_proc if num_proc > 1 else None, desc=f"{name}: tokenizing",
    )
    flags = tokenized.select_columns(["truncated", "dropped"]).to_dict()
    n_dropped = sum(flags["dropped"])
    n_truncated = sum(t and not d for t, d in zip(flags["truncated"], flags["dropped"]))  # of those kept
    if n_dropped == len(tokenized):
        raise UserValueError(
            f"{name}: none of the {n_dropped} pairs keeps an answer token within max_seq_len={max_seq_len} "
            "(the prompts fill it): raise max_seq_len"
        )
    if n_dropped:
        log.warning(
            "%s: dropped %d of %d pairs whose prompt fills max_seq_len=%s (no answer token left)",
            name, n_dropped, len(tokenized), max_seq_len,
        )
        tokenized = tokenized.filter(lambda dropped: not dropped, input_columns="dropped")
    log.info("%s: %d pairs, %d truncated", name, len(tokenized), n_truncated)
    return PreferenceDataset(tokenized.remove_columns(["truncated", "dropped"]))


def stack_exchange_paired_dataset(
    tokenizer: Tokenizer,
    source: str = "lvwerra/stack-exchange-paired",
    column_map: Optional[Dict[str, str]] = None,
    max_seq_len: Optional[int] = None,
    **kwargs,
) -> PreferenceDataset:
    """The Stack Exchange paired layout (https://huggingface.co/datasets/lvwerra/stack-exchange-paired):
    text columns ``question``, ``response_j`` (preferred) and ``response_k``; by default
    its ``data/rl`` split, as torchtune and TRL's example use.

    Args:
        tokenizer (Tokenizer): the model's tokenizer.
        source (str): dataset name or loader.
        column_map (Optional[Dict[str, str]]): as in ``preference_dataset``; defaults to
            question / response_j / response_k.
        max_seq_len (Optional[int]): as in ``preference_dataset``.
        **kwargs: the rest of ``preference_dataset``'s arguments and ``load_dataset``'s.

    Returns:
        PreferenceDataset: the pairs.
    """
    column_map = column_map or {"prompt": "question", "chosen": "response_j", "rejected": "response_k"}
    if source == "lvwerra/stack-exchange-paired":
        kwargs.setdefault("data_dir", "data/rl")
    return preference_dataset(tokenizer, source, column_map=column_map, max_seq_len=max_seq_len, **kwargs)


def hh_rlhf_helpful_dataset(
    tokenizer: Tokenizer,
    source: str = "RLHFlow/HH-RLHF-Helpful-standard",
    column_map: Optional[Dict[str, str]] = None,
    max_seq_len: Optional[int] = None,
    **kwargs,
) -> PreferenceDataset:
    """Anthropic's helpful HH-RLHF pairs in RLHFlow's standard layout: ``chosen`` and
    ``rejected`` are whole OpenAI-style conversations sharing all turns but the last.

    Args:
        tokenizer (Tokenizer): the model's tokenizer.
        source (str): dataset name or loader.
        column_map (Optional[Dict[str, str]]): as in ``preference_dataset``.
        max_seq_len (Optional[int]): as in ``preference_dataset``.
        **kwargs: the rest of ``preference_dataset``'s arguments and ``load_dataset``'s.

    Returns:
        PreferenceDataset: the pairs.
    """
    return preference_dataset(tokenizer, source, column_map=column_map, max_seq_len=max_seq_len, **kwargs)
