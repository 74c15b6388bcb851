"""``auto_tokenizer``: a tokenizer built from a model folder, with the model's chat template.

Files read
----------
- ``tokenizer.json`` (anything the ``tokenizers`` library reads, through
  ``HuggingFaceBaseTokenizer``), else ``tokenizer.model``: Meta's Llama 3 tiktoken ranks
  (through ``Llama3Tokenizer``) or a SentencePiece model (``SentencePieceTokenizer``).
- ``tokenizer_config.json`` (optional): ``bos_token``, ``eos_token``, ``pad_token`` (a string
  or an ``{"content": ...}`` object), ``add_bos_token``, ``added_tokens_decoder`` (with a
  ``tokenizer.model``: the added tokens, their ids and ``lstrip``/``rstrip``), ``legacy``
  (SentencePiece's dummy prefix on every text piece, see ``ModelFolderTokenizer``) and
  ``chat_template``; a ``chat_template.jinja`` file wins over the latter, as in transformers.
- ``generation_config.json`` (optional): ``eos_token_id``, an id or a list; every one is a
  stop token.

``eos_id`` is ``eos_token``'s id (an Instruct model's end-of-turn token), else the first
``eos_token_id``; ``pad_id`` is ``pad_token``'s id, else ``eos_id`` (padding is never
attended to nor learned); ``bos_id`` is ``bos_token``'s id unless ``add_bos_token`` is false
(None then, as for Qwen).

Conversations: ids equal ``apply_chat_template(messages, tokenize=True)``
--------------------------------------------------------------------------
``tokenize_messages`` renders the whole conversation with the template
(``_chat_template.py``) and encodes the text as transformers does: the text is split at
the *control tokens* (the special-flagged added tokens of a ``tokenizer.json``, honouring
their ``lstrip``/``rstrip``; the 256 special tokens of Llama 3; the special entries of
``added_tokens_decoder`` for SentencePiece), each becomes its id, and the text between
two of them is encoded on its own as ordinary text (the ``tokenizers`` library also
encodes the pieces between added tokens separately).

Special-token text inside message content
------------------------------------------
A user typing "<|im_end|>" must not end a turn. Before rendering, every control-token
text inside a message's content is replaced by a *marker*: a private-use character not
found in any content nor in the template, the token's index, the same character again.
So every control-token text in the rendered string was written by the template itself:
those, and only those, become control ids. In the text between them the markers are put
back and the text is encoded with special-token matching off (``encode``), so the content
keeps its characters and gets the ids of ordinary text, in context with its neighbours.
Non-special added tokens (Qwen's ``<think>``) are not control tokens: they stay in the
content (templates read them: Qwen 3 splits on ``</think>``) and are matched as
vocabulary words, as ``encode`` always matches them. The marker changes what the
template sees only where the template inspects special-token text inside content.

Masks
-----
The mask is True where the loss is ignored. A message whose ``masked`` is False (by
default the assistant's) is learned over the text it adds to the render:

- an assistant message: from the end of the *generation prompt* (the render of the
  messages before it with ``add_generation_prompt=True``, as far as it agrees with the
  whole render) through the first stop token after it (``<|im_end|>``, ``<|eot_id|>``):
  the text the model writes after the prompt it is given at inference, Qwen 3's
  ``<think>`` block included. What the template writes after the stop token ("\\n") stays
  masked. The named tokenizers also learn the assistant header; here it is the prompt.
- any other message (``train_on_input``): from the end of the render of the messages
  before it to the end of the render of the messages up to it.

Char spans become ids by encoding, for a boundary that falls inside a text piece, the
piece's text up to the boundary: the ids it shares with the whole piece lie before the
boundary; a piece id that crosses the boundary is learned, as transformers' assistant mask
learns any token overlapping the assistant's text.

``add_end_tokens=False`` renders a prompt: ``add_generation_prompt=True`` after the
messages, or, when the last message is an assistant's with content, that message left
open after its content (transformers' ``continue_final_message``); an empty assistant
message last gives the generation prompt. ``max_seq_len`` cuts as the named tokenizers do
(``truncate_to_max_seq_len``); ``max_tokens`` encodes only the first ids.
"""

import json
import os
import re
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from torchtune._errors import UserFileNotFoundError, UserValueError
from torchtune.data import Message
from torchtune.tokenizers._chat_template import ChatTemplate, find_chat_template, message_dicts
from torchtune.tokenizers._hf_tokenizer import HuggingFaceBaseTokenizer, read_json, read_text
from torchtune.tokenizers._prompt_template import apply_prompt_template, resolve_prompt_template
from torchtune.tokenizers._sentencepiece import SentencePieceTokenizer
from torchtune.tokenizers._truncated import (
    check_truncation_type,
    encode_truncated,
    truncate_to_max_seq_len,
)

# The named special tokens apply_chat_template hands the template (special_tokens_map).
_NAMED_TOKENS = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"
)

# A tiktoken rank file starts with "base64 rank" lines; a SentencePiece model is protobuf.
_TIKTOKEN_LINE = re.compile(rb"^[A-Za-z0-9+/=]+ \d+\r?\n")

Span = Tuple[int, int]


class ModelFolderTokenizer:
    """A model folder's tokenizer and chat template (build it with ``auto_tokenizer``).

    Attributes:
        bos_id (Optional[int]): BOS, or None when the model adds none.
        eos_id (int): the end token ``truncation_type="right"`` puts last.
        pad_id (int): padding id.
        vocab_size (int): ids the embedding must cover.
        stop_tokens (List[int]): ids that end generation.
        max_seq_len (Optional[int]): ``tokenize_messages`` cuts its output to this.
        splits_at_spaces (bool): see ``encode_truncated``.
        chat_template (Optional[ChatTemplate]): the template, None if the model has none.

    ``prefix_each_piece`` (SentencePiece only): transformers' ``legacy`` flag. True: every
    text piece between control tokens gets SentencePiece's dummy-prefix space; False (the
    default of transformers 5 and of current Llama-style ``tokenizer_config.json`` files):
    only a piece at the start of the rendered text does, the others are encoded as they
    read in the middle of a longer text (``trim_leading_whitespace``).
    """

    def __init__(
        self,
        backend: Any,
        *,
        path: str,
        control: Mapping[str, int],
        lstrip: FrozenSet[str],
        rstrip: FrozenSet[str],
        bos_id: Optional[int],
        eos_id: int,
        pad_id: int,
        stop_tokens: Sequence[int],
        chat_template: Optional[ChatTemplate],
        max_seq_len: Optional[int],
        prompt_template: Any,
        truncation_type: str,
        prefix_each_piece: bool = True,
    ):
        self._backend = backend
        self.path = path
        # Added tokens (Phi-3's <|user|> ...) may lie past a SentencePiece model's pieces.
        self.vocab_size = max([backend.vocab_size] + [i + 1 for i in control.values()])
        self._prefix_each_piece = prefix_each_piece
        # Control ids a SentencePiece model cannot decode itself (Phi-3's 32000-32010).
        self._added_past_pieces = {
            i: t for t, i in control.items() if i >= backend.vocab_size
        } if isinstance(backend, SentencePieceTokenizer) else {}
        self.splits_at_spaces = bool(getattr(backend, "splits_at_spaces", False))
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self.stop_tokens = list(stop_tokens)
        self.chat_template = chat_template
        self.max_seq_len = max_seq_len
        self.prompt_template = resolve_prompt_template(prompt_template)
        self.truncation_type = check_truncation_type(truncation_type)
        self._control = dict(control)
        # Longest first: at one position the longest token wins, as in ``tokenizers``.
        self._control_texts = sorted(self._control, key=len, reverse=True)
        alternatives = [
            (r"\s*" if t in lstrip else "") + re.escape(t) + (r"\s*" if t in rstrip else "")
            for t in self._control_texts
        ]
        self._split_re = re.compile("|".join(alternatives)) if alternatives else None
        self._text_re = (
            re.compile("|".join(map(re.escape, self._control_texts)))
            if self._control_texts
            else None
        )

    # ----- the Tokenizer protocol -----

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
    ) -> List[int]:
        """Encode ``text``; special-token text in it stays text.

        Args:
            text (str): the text.
            add_bos (bool): prepend ``bos_id`` (nothing when it is None).
            add_eos (bool): append ``eos_id``.
            trim_leading_whitespace (bool): as the backend's (SentencePiece drops its
                dummy-prefix space; a no-op for the others).

        Returns:
            List[int]: the ids.
        """
        ids = [self.bos_id] if add_bos and self.bos_id is not None else []
        ids += self._backend.encode(
            text, add_bos=False, add_eos=False, trim_leading_whitespace=trim_leading_whitespace
        )
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def encode_with_special(self, text: str) -> List[int]:
        """Encode trusted text (a rendered template): control-token text becomes ids."""
        return self._encode_rendered(text, [], _Markers.none(), None)[0]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Decode ids; ``skip_special_tokens`` drops control ids (SentencePiece always
        drops BOS/EOS; turn markers that are ordinary pieces of the model, as Gemma's
        ``<start_of_turn>``, are dropped here)."""
        if isinstance(self._backend, SentencePieceTokenizer):
            added = self._added_past_pieces
            ids = [int(i) for i in ids]
            if skip_special_tokens:
                control = set(self._control.values())
                return self._backend.decode([i for i in ids if i not in added and i not in control])
            if not added:
                return self._backend.decode(ids)
            text, run = "", []
            for i in ids + [None]:
                if i is None or i in added:
                    text += self._backend.decode(run) + (added[i] if i is not None else "")
                    run = []
                else:
                    run.append(i)
            return text
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    # ----- conversations -----

    def tokenize_messages(
        self,
        messages: Sequence[Message],
        add_end_tokens: bool = True,
        *,
        max_tokens: Optional[int] = None,
    ) -> Tuple[List[int], List[bool]]:
        """Tokenize a conversation with the model's chat template (module docstring).

        Args:
            messages (Sequence[Message]): the conversation.
            add_end_tokens (bool): the whole conversation; False renders a prompt (the
                generation prompt, or the last assistant message left open).
            max_tokens (Optional[int]): return only the first this many ids (before the
                ``max_seq_len`` cut), encoding only what they need.

        Returns:
            Tuple[List[int], List[bool]]: the ids and the mask (True: not learned).

        Raises:
            ValueError: if the model has no chat template and no ``prompt_template`` was
                given, or the template rejects a message (naming it).
        """
        messages = list(apply_prompt_template(self.prompt_template, messages))
        if self.chat_template is None:
            tokens, mask = self._tokenize_plain(messages, add_end_tokens, max_tokens)
        else:
            markers = _Markers.choose(
                self._control_texts,
                self._text_re,
                [m.content for m in messages] + [self.chat_template.source],
            )
            text, spans = self._render(messages, add_end_tokens, markers)
            tokens, mask = self._encode_rendered(text, spans, markers, max_tokens)
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

    def _tokenize_plain(
        self, messages: List[Message], add_end_tokens: bool, max_tokens: Optional[int]
    ) -> Tuple[List[int], List[bool]]:
        """No chat template: BOS, each (prompt-templated) content as text, EOS."""
        if self.prompt_template is None:
            raise UserValueError(
                f"{self.path} has no chat template (no chat_template.jinja, no chat_template "
                "in tokenizer_config.json), so tokenize_messages cannot format a "
                "conversation: pass chat_template= or prompt_template= to auto_tokenizer, "
                "or use the family's named tokenizer (e.g. llama3_tokenizer)"
            )
        tokens: List[int] = [] if self.bos_id is None else [self.bos_id]
        mask = [True] * len(tokens)
        for m in messages:
            left = None if max_tokens is None else max_tokens - len(tokens)
            if left is not None and left <= 0:
                break
            ids = encode_truncated(self, m.content, left, add_bos=False, add_eos=False)
            tokens += ids
            mask += [bool(m.masked)] * len(ids)
        if add_end_tokens:
            tokens.append(self.eos_id)
            mask.append(bool(messages[-1].masked) if messages else True)
        return tokens, mask

    def _render(
        self, messages: List[Message], add_end_tokens: bool, markers: "_Markers"
    ) -> Tuple[str, List[Span]]:
        """The rendered text (markers for content control text) and the learned spans."""
        template = self.chat_template
        chat = [{**d, "content": markers.hide(d["content"])} for d in message_dicts(messages)]
        n = len(chat)
        open_last = not add_end_tokens and n > 0 and chat[-1]["role"] == "assistant"
        if open_last and chat[-1]["content"]:
            text = self._continue_last(chat, markers)
        elif open_last:
            text = template.render(chat[:-1], add_generation_prompt=True)
        else:
            text = template.render(chat, add_generation_prompt=not add_end_tokens)

        ends: Dict[int, int] = {-1: 0}

        def end_of(i: int) -> int:
            """Where message ``i`` ends in ``text``: where its prefix render leaves it."""
            if i not in ends:
                ends[i] = _common_prefix(template.render(chat[: i + 1]), text)
            return ends[i]

        spans: List[Span] = []
        for i, m in enumerate(messages):
            if m.masked:
                continue
            last = i == n - 1
            if m.role != "assistant":
                spans.append((end_of(i - 1), len(text) if last else end_of(i)))
                continue
            prompt = template.try_render(chat[:i], add_generation_prompt=True)
            start = end_of(i - 1) if prompt is None else _common_prefix(prompt, text)
            start = max(start, spans[-1][1] if spans else 0)
            if last and open_last:
                end = len(text)
            else:
                end = self._stop_token_end(text, start)
                if end is None:
                    end = len(text) if last else max(end_of(i), start)
            spans.append((start, end))
        return text, spans

    def _continue_last(self, chat: List[Dict[str, str]], markers: "_Markers") -> str:
        """The render cut right after the last (assistant) message's content."""
        tag = markers.tag
        chat = chat[:-1] + [{**chat[-1], "content": chat[-1]["content"] + tag}]
        text = self.chat_template.render(chat)
        cut = text.rfind(tag)
        if cut < 0:
            raise UserValueError(
                f"{self.chat_template.where}: the chat template rewrites the last assistant "
                f"message (message {len(chat) - 1}), so add_end_tokens=False cannot leave "
                "it open; end the conversation with an empty assistant message"
            )
        return text[:cut]

    def _stop_token_end(self, text: str, start: int) -> Optional[int]:
        """The end of the first stop token the template writes at or after ``start``."""
        if self._split_re is None:
            return None
        stops = set(self.stop_tokens)
        for match in self._split_re.finditer(text, start):
            if self._control[match.group().strip()] in stops:
                return match.end()
        return None

    def _encode_rendered(
        self, text: str, spans: List[Span], markers: "_Markers", max_tokens: Optional[int]
    ) -> Tuple[List[int], List[bool]]:
        """Ids of rendered ``text`` and their mask: learned where they overlap ``spans``."""
        tokens: List[int] = []
        mask: List[bool] = []
        matches = [] if self._split_re is None else list(self._split_re.finditer(text))
        pos = 0
        for match in matches + [None]:
            end = len(text) if match is None else match.start()
            if pos < end:
                left = None if max_tokens is None else max_tokens - len(tokens)
                ids, piece_mask = self._encode_piece(text, pos, end, spans, markers, left)
                tokens += ids
                mask += piece_mask
            if match is None or (max_tokens is not None and len(tokens) >= max_tokens):
                break
            s, e = match.span()
            tokens.append(self._control[match.group().strip()])
            mask.append(not any(a < e and s < b for a, b in spans))
            pos = e
        return tokens, mask

    def _encode_piece(
        self,
        text: str,
        s: int,
        e: int,
        spans: List[Span],
        markers: "_Markers",
        left: Optional[int],
    ) -> Tuple[List[int], List[bool]]:
        """Ids of the text piece ``text[s:e]`` (no control tokens) and their mask."""
        trim = s > 0 and not self._prefix_each_piece
        ids = encode_truncated(
            self, markers.show(text[s:e]), left, add_bos=False, add_eos=False,
            trim_leading_whitespace=trim,
        )
        mask = [True] * len(ids)
        for a, b in spans:
            if b <= s or a >= e:
                continue
            lo, hi = 0, len(ids)
            if a > s:
                lo = self._ids_before(markers.show(text[s:a]), ids, trim, through=False)
            if b < e:
                hi = self._ids_before(markers.show(text[s:b]), ids, trim, through=True)
            for j in range(lo, min(hi, len(ids))):
                mask[j] = False
        return ids, mask

    def _ids_before(self, head_text: str, ids: List[int], trim: bool, through: bool) -> int:
        """How many of a piece's ``ids`` lie within its start ``head_text``; with
        ``through``, also the id that crosses the cut, if one does."""
        head = encode_truncated(
            self, head_text, len(ids) + 1, add_bos=False, add_eos=False,
            trim_leading_whitespace=trim,
        )
        n = _common_prefix(head, ids)
        crosses = n < len(head) and n < len(ids)
        return n + 1 if through and crosses else n


class _Markers:
    """Stand-ins for control-token text inside message content (module docstring)."""

    def __init__(self, char: str, texts: Sequence[str], text_re: Optional["re.Pattern"]):
        self.char = char
        self._texts = list(texts)
        self._text_re = text_re
        self._index = {t: i for i, t in enumerate(self._texts)}
        self._show_re = re.compile(re.escape(char) + r"(\d+)" + re.escape(char))
        self.tag = char * 3  # marks where an open last message ends (never a marker)

    @classmethod
    def choose(
        cls, texts: Sequence[str], text_re: Optional["re.Pattern"], taken: Sequence[str]
    ) -> "_Markers":
        """Markers made of a private-use character that no text in ``taken`` holds."""
        for code in range(0xE000, 0xF900):
            char = chr(code)
            if not any(char in t for t in taken):
                return cls(char, texts, text_re)
        raise UserValueError("the messages use every private-use character; cannot mark them")

    @classmethod
    def none(cls) -> "_Markers":
        return cls("\ue000", [], None)

    def hide(self, content: str) -> str:
        if self._text_re is None:
            return content
        return self._text_re.sub(
            lambda m: f"{self.char}{self._index[m.group()]}{self.char}", content
        )

    def show(self, piece: str) -> str:
        if not self._texts:
            return piece
        return self._show_re.sub(lambda m: self._texts[int(m.group(1))], piece)


def _common_prefix(a: Sequence, b: Sequence) -> int:
    """The length of the longest common prefix of two strings or id lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def auto_tokenizer(
    path: str,
    max_seq_len: Optional[int] = None,
    prompt_template: Any = None,
    truncation_type: str = "right",
    *,
    chat_template: Optional[str] = None,
    chat_template_kwargs: Optional[Mapping[str, Any]] = None,
) -> ModelFolderTokenizer:
    """The tokenizer of a Hugging Face model folder, with the model's own chat template.

    Args:
        path (str): the model folder (or a file in it, e.g. its ``tokenizer.json``).
        max_seq_len (Optional[int]): ``tokenize_messages`` cuts its output to this many
            ids; None for no limit.
        prompt_template (Optional[Any]): rewrites messages before the chat template (see
            ``resolve_prompt_template``); without a chat template, messages are then
            encoded as plain text between BOS and EOS.
        truncation_type (str): "right" (keep the start, ``eos_id`` last) or "left".
        chat_template (Optional[str]): a ``.jinja`` file or Jinja source used instead of
            the folder's template (for a base model that has none).
        chat_template_kwargs (Optional[Mapping[str, Any]]): extra template variables, as
            ``apply_chat_template(**kwargs)`` passes them (e.g. ``enable_thinking``).

    Returns:
        ModelFolderTokenizer: the tokenizer.

    Raises:
        FileNotFoundError: if the folder or its tokenizer file does not exist.
        ValueError: if a file is malformed or a special token is not in the vocabulary.

    Example:
        >>> tok = auto_tokenizer("Qwen2.5-7B-Instruct", max_seq_len=4096)
        >>> chat = [Message("user", "Hi"), Message("assistant", "Hello")]
        >>> tokens, mask = tok.tokenize_messages(chat)
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) if os.path.isfile(path) else path
    if not os.path.isdir(folder):
        raise UserFileNotFoundError(f"model folder not found: {path}")
    config = _optional_json(os.path.join(folder, "tokenizer_config.json"))
    generation = _optional_json(os.path.join(folder, "generation_config.json"))
    backend, control, lstrip, rstrip, where = _load_backend(folder, config)

    def token_id(name: str) -> Optional[int]:
        text = _token_text(config.get(name))
        if text is None:
            return None
        i = control.get(text)
        if i is None and isinstance(backend, HuggingFaceBaseTokenizer):
            i = backend.token_to_id(text)
        if i is None:
            raise UserValueError(
                f"{folder}/tokenizer_config.json: {name} {text!r} is not a token of {where}"
            )
        return i

    vocab_size = max([backend.vocab_size] + [i + 1 for i in control.values()])
    stops = _generation_eos_ids(generation, vocab_size, folder)
    eos_id = token_id("eos_token")
    if eos_id is None:
        eos_id = stops[0] if stops else getattr(backend, "eos_id", None)
    if eos_id is None:
        raise UserValueError(
            f"{folder}: no eos_token in tokenizer_config.json nor eos_token_id in "
            "generation_config.json"
        )
    bos_id = token_id("bos_token")
    if bos_id is None and isinstance(backend, SentencePieceTokenizer):
        bos_id = backend.bos_id
    if config.get("add_bos_token") is False:
        bos_id = None
    pad_id = token_id("pad_token")
    template = _chat_template(folder, config, chat_template, chat_template_kwargs)
    return ModelFolderTokenizer(
        backend,
        path=folder,
        control=control,
        lstrip=lstrip,
        rstrip=rstrip,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=eos_id if pad_id is None else pad_id,
        stop_tokens=list(dict.fromkeys([eos_id] + stops)),
        chat_template=template,
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
        prefix_each_piece=bool(config.get("legacy", False)),
    )


def template_tokenizer(
    backend: Any,
    *,
    name: str,
    chat_template: str,
    control: Mapping[str, int],
    rstrip: Sequence[str] = (),
    bos_token: Optional[str],
    eos_token: str,
    pad_token: Optional[str] = None,
    stop_tokens: Sequence[str] = (),
    max_seq_len: Optional[int] = None,
    prompt_template: Any = None,
    truncation_type: str = "right",
) -> ModelFolderTokenizer:
    """A named family tokenizer: ``backend`` with the family's published chat template,
    tokenized as ``auto_tokenizer`` tokenizes a model folder that holds the same files.

    Args:
        backend (Any): a ``SentencePieceTokenizer`` or ``HuggingFaceBaseTokenizer``.
        name (str): the builder's name, for errors (``phi3_mini_tokenizer``).
        chat_template (str): the Jinja source of the family's template.
        control (Mapping[str, int]): the control tokens (text -> id) the template writes.
        rstrip (Sequence[str]): control tokens that eat the whitespace after them.
        bos_token (Optional[str]): BOS text (None: the family adds none).
        eos_token (str): EOS text (``truncation_type="right"`` ends with it).
        pad_token (Optional[str]): pad text (None: ``eos_token``).
        stop_tokens (Sequence[str]): more tokens that end generation.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this many ids.
        prompt_template (Any): see ``resolve_prompt_template``.
        truncation_type (str): "right" or "left".

    Returns:
        ModelFolderTokenizer: the tokenizer; SentencePiece pieces after the first are
        encoded without the dummy-prefix space (transformers' ``legacy: false``).
    """
    control = {**getattr(backend, "special_tokens", {}), **control}
    named = [t for t in (bos_token, eos_token, pad_token, *stop_tokens) if t is not None]
    for text in named:
        if text not in control:
            raise UserValueError(
                f"{name}: {getattr(backend, 'path', 'the tokenizer')} has no special token "
                f"{text!r}"
            )
    ids = {t: control[t] for t in named}
    variables = {"bos_token": bos_token or "", "eos_token": eos_token}
    if pad_token is not None:
        variables["pad_token"] = pad_token
    eos_id = ids[eos_token]
    return ModelFolderTokenizer(
        backend,
        path=getattr(backend, "path", name),
        control=control,
        lstrip=frozenset(),
        rstrip=frozenset(rstrip),
        bos_id=None if bos_token is None else ids[bos_token],
        eos_id=eos_id,
        pad_id=eos_id if pad_token is None else ids[pad_token],
        stop_tokens=list(dict.fromkeys([eos_id] + [ids[t] for t in stop_tokens])),
        chat_template=ChatTemplate(chat_template, f"{name}'s chat template", variables),
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
        prefix_each_piece=False,
    )


def _chat_template(
    folder: str,
    config: Mapping[str, Any],
    override: Optional[str],
    kwargs: Optional[Mapping[str, Any]],
) -> Optional[ChatTemplate]:
    """The template ``auto_tokenizer`` uses, with the variables transformers passes."""
    if override is not None:
        if os.path.isfile(override):
            found = (read_text(override, "chat template"), override)
        elif "{{" in override or "{%" in override:
            found = (override, "chat_template argument")
        else:
            raise UserFileNotFoundError(
                f"chat_template: no such file, nor Jinja source: {override}"
            )
    else:
        found = find_chat_template(folder, config)
    if found is None:
        return None
    variables = {n: t for n in _NAMED_TOKENS if (t := _token_text(config.get(n))) is not None}
    return ChatTemplate(found[0], found[1], {**variables, **dict(kwargs or {})})


def _load_backend(folder: str, config: Mapping[str, Any]):
    """The backend tokenizer, its control tokens (text -> id), the control tokens that
    eat whitespace on their left and right, and the file read."""
    json_path = os.path.join(folder, "tokenizer.json")
    model_path = os.path.join(folder, "tokenizer.model")
    if os.path.isfile(json_path):
        text = read_text(json_path, "tokenizer.json")
        try:
            data = json.loads(text)
        except ValueError:
            data = {}  # HuggingFaceBaseTokenizer names the fault below
        # BOS/EOS are added by ModelFolderTokenizer, never by the backend: eos_id=0 is a
        # placeholder the backend never writes.
        backend = HuggingFaceBaseTokenizer(
            json_path,
            bos_id=None,
            eos_id=0,
            splits_at_spaces=_proven_splits_at_spaces(data),
            tokenizer_json=text,
        )
        added = {a.get("content"): a for a in data.get("added_tokens") or []}
        control = dict(backend.special_tokens)
        lstrip = frozenset(t for t in control if added.get(t, {}).get("lstrip"))
        rstrip = frozenset(t for t in control if added.get(t, {}).get("rstrip"))
        return backend, control, lstrip, rstrip, json_path
    if not os.path.isfile(model_path):
        raise UserFileNotFoundError(f"{folder} has no tokenizer.json or tokenizer.model")
    with open(model_path, "rb") as f:
        head = f.read(256)
    entries = [
        (int(i), a) for i, a in (config.get("added_tokens_decoder") or {}).items()
        if isinstance(a, dict) and a.get("special", True)
    ]
    declared = {a.get("content"): i for i, a in entries}
    lstrip = frozenset(a.get("content") for _, a in entries if a.get("lstrip"))
    rstrip = frozenset(a.get("content") for _, a in entries if a.get("rstrip"))
    if _TIKTOKEN_LINE.match(head):
        # Imported here: torchtune.models imports this package.
        from torchtune.models.llama3._tokenizer import Llama3Tokenizer

        ids = set(declared.values())
        names = declared if ids == set(range(128_000, 128_256)) else None
        backend = Llama3Tokenizer(model_path, special_tokens=names)
        return backend, dict(backend.special_tokens), frozenset(), frozenset(), model_path
    backend = SentencePieceTokenizer(model_path)
    return backend, {**backend.special_tokens, **declared}, lstrip, rstrip, model_path


def _proven_splits_at_spaces(data: Mapping[str, Any]) -> bool:
    """True for the Llama 3 and Qwen ``tokenizer.json`` layouts, whose split regexes are
    proved not to span a space after a non-space (``models/llama3/_tokenizer.py``,
    ``models/qwen2/_tokenizer.py``); False (every cut checked) for anything else."""
    from torchtune.models.llama3._tokenizer import LLAMA3_SPLIT_PATTERN
    from torchtune.models.qwen2._tokenizer import QWEN_SPLIT_PATTERN

    normalizer = data.get("normalizer")
    if normalizer is not None and normalizer != {"type": "NFC"}:
        return False
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") or []
    if pre.get("type") != "Sequence" or len(steps) != 2:
        return False
    split, byte_level = steps
    return (
        split.get("type") == "Split"
        and (split.get("pattern") or {}).get("Regex") in (LLAMA3_SPLIT_PATTERN, QWEN_SPLIT_PATTERN)
        and byte_level.get("type") == "ByteLevel"
        and byte_level.get("use_regex") is False
        # an added token with a space could match across the cut
        and not any(" " in a.get("content", "") for a in data.get("added_tokens") or [])
    )


def _optional_json(path: str) -> Dict[str, Any]:
    """A JSON object file's content, {} when the file does not exist."""
    if not os.path.isfile(path):
        return {}
    data = read_json(path, os.path.basename(path))
    if not isinstance(data, dict):
        raise UserValueError(f"{path} is not a JSON object")
    return data


def _token_text(value: Any) -> Optional[str]:
    """A special token as tokenizer_config.json gives it: text or {"content": text}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _generation_eos_ids(generation: Mapping[str, Any], vocab_size: int, folder: str) -> List[int]:
    """``eos_token_id`` of generation_config.json as a list of ids."""
    value = generation.get("eos_token_id")
    ids = [] if value is None else value if isinstance(value, list) else [value]
    for i in ids:
        if not isinstance(i, int) or not 0 <= i < vocab_size:
            raise UserValueError(
                f"{folder}/generation_config.json: eos_token_id {i!r} is not an id in "
                f"[0, {vocab_size})"
            )
    return ids
