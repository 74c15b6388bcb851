"""``auto_tokenizer``: ids equal transformers' ``apply_chat_template`` token for token.

The reference is ``AutoTokenizer.from_pretrained(folder).apply_chat_template(messages,
tokenize=True)`` on the same folder. The tiny tests (always run, CI included) build a
byte-level BPE ``tokenizer.json`` with the ``tokenizers`` library and a ChatML template
written here; the ``real`` ones use the Llama 3 and Qwen files of shared/data (absent in
CI: they skip) and the official Llama 3.1 / Qwen 2.5 / Qwen 3 templates.
"""

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from tokenizers import decoders, models, pre_tokenizers, trainers, Tokenizer

from torchtune._errors import UserFileNotFoundError, UserValueError
from torchtune.data import Message
from torchtune.tokenizers import _chat_template
from torchtune.tokenizers._auto_tokenizer import auto_tokenizer

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer  # noqa: E402
from transformers.utils import chat_template_utils  # noqa: E402

REPO_ROOT = Path(__file__).parents[3]
SHARED = REPO_ROOT.parent / "shared" / "data"
LLAMA31_TEMPLATE = REPO_ROOT / "tests" / "assets" / "llama3.1_chat_template.jinja"

# ChatML as Qwen writes it; the assistant part sits in a {% generation %} block so that
# transformers' return_assistant_tokens_mask gives an independent mask to compare with.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A template that rejects non-alternating roles, as Mistral's and Gemma's do.
ALTERNATING = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant') }}"
    "{% endif %}{{ message['role'] + ': ' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}"
)

CONVERSATIONS = [
    [Message("user", "Hello, world!"), Message("assistant", "Hi there. How can I help?")],
    [
        Message("system", "You are terse."),
        Message("user", "What is 2 + 2?"),
        Message("assistant", "4"),
    ],
    [
        Message("system", "  Answer in French.\n"),
        Message("user", "Good morning\n\nhow are you?  "),
        Message("assistant", " Bonjour ! Très bien.\n"),
        Message("user", "Thanks — 谢谢 🙂"),
        Message("assistant", "De rien."),
    ],
    [
        Message("user", "one"),
        Message("assistant", "two"),
        Message("user", "three"),
        Message("assistant", "\n\nfour\n"),
    ],
]

FROZEN_NOW = datetime(2025, 3, 5, 12, 0, 0)


class _FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz=None):
        return FROZEN_NOW


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    """strftime_now reads the same fixed time in transformers and here."""
    monkeypatch.setattr(chat_template_utils, "datetime", _FrozenDatetime)
    monkeypatch.setattr(_chat_template, "datetime", _FrozenDatetime)


def _dicts(messages):
    return [{"role": m.role, "content": m.content} for m in messages]


def _reference_ids(ref, messages, **kwargs):
    ids = ref.apply_chat_template(_dicts(messages), tokenize=True, return_dict=False, **kwargs)
    return list(ids)


def _learned_runs(tok, ids, mask):
    """The decoded text of each run of learned ids."""
    runs, run = [], []
    for i, masked in list(zip(ids, mask)) + [(None, True)]:
        if masked and run:
            runs.append(tok.decode(run, skip_special_tokens=False))
            run = []
        elif not masked:
            run.append(i)
    return runs


def _write_folder(folder: Path, tokenizer_json=None, config=None, generation=None, jinja=None):
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_json is not None:
        target = folder / "tokenizer.json"
        if isinstance(tokenizer_json, Path):
            target.symlink_to(tokenizer_json)
        else:
            target.write_text(tokenizer_json, encoding="utf-8")
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    if jinja is not None:
        (folder / "chat_template.jinja").write_text(jinja, encoding="utf-8")
    return folder


# ----- the tiny tokenizer (always runs) -----

TINY_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _tiny_tokenizer_json() -> str:
    """A byte-level BPE trained on a few lines; ChatML's three special tokens at ids
    0..2 and two non-special added tokens, as Qwen's ``<think>``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=TINY_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [m.content for conv in CONVERSATIONS for m in conv] * 3
    lines += ["user assistant system", "Hello there, how are you today?", "<|im_end|>"]
    tok.train_from_iterator(lines, trainer)
    tok.add_tokens(["<think>", "</think>"])
    return tok.to_str()


def _tiny_config(template=CHATML):
    return {
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "chat_template": template,
    }


@pytest.fixture(scope="module")
def tiny_json() -> str:
    return _tiny_tokenizer_json()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_json) -> Path:
    return _write_folder(
        tmp_path_factory.mktemp("tiny_chatml"),
        tiny_json,
        _tiny_config(),
        {"eos_token_id": [2, 0]},
    )


@pytest.fixture(scope="module")
def tiny_pair(tiny_folder):
    return auto_tokenizer(tiny_folder), AutoTokenizer.from_pretrained(str(tiny_folder))


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_tiny_chatml_ids_and_mask_equal_transformers(tiny_pair, conv):
    tok, ref = tiny_pair
    messages = CONVERSATIONS[conv]
    ids, mask = tok.tokenize_messages(messages)
    out = ref.apply_chat_template(
        _dicts(messages), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ids == list(out["input_ids"])
    # transformers' mask: 1 on tokens overlapping the {% generation %} text
    assert [int(not m) for m in mask] == list(out["assistant_masks"])
    want = [m.content + "<|im_end|>" for m in messages if m.role == "assistant"]
    assert _learned_runs(tok, ids, mask) == want


def test_tiny_attributes(tiny_pair):
    tok, ref = tiny_pair
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 2, 0)
    assert tok.stop_tokens == [2, 0]
    assert tok.vocab_size == len(ref)
    assert tok.encode("Hello", add_bos=True, add_eos=True) == ref.encode("Hello") + [2]
    assert tok.decode(tok.encode("Hello there", add_eos=False)) == "Hello there"


def test_generation_prompt(tiny_pair):
    tok, ref = tiny_pair
    messages = CONVERSATIONS[1][:2]
    ids, mask = tok.tokenize_messages(messages + [Message("assistant", "")], add_end_tokens=False)
    assert ids == _reference_ids(ref, messages, add_generation_prompt=True)
    assert all(mask)
    # an assistant message with text is left open after it (continue_final_message)
    part = Message("assistant", "Partial answer")
    ids, mask = tok.tokenize_messages(messages + [part], add_end_tokens=False)
    assert ids == _reference_ids(ref, messages + [part], continue_final_message=True)
    assert _learned_runs(tok, ids, mask) == ["Partial answer"]


def test_special_token_text_in_content_stays_text(tiny_pair, tiny_json):
    tok, ref = tiny_pair
    im_end = 2
    messages = [Message("user", "hi <|im_end|> there<|im_start|>"), Message("assistant", "ok")]
    ids, mask = tok.tokenize_messages(messages)
    # only the template's two turn ends are control ids; the user's text is kept
    assert ids.count(im_end) == 2 and ids.count(1) == 2
    rendered = ref.apply_chat_template(_dicts(messages), tokenize=False)
    assert tok.decode(ids, skip_special_tokens=False) == rendered
    # the user turn's text is encoded as one ordinary text (special tokens as text)
    plain = Tokenizer.from_str(tiny_json)
    plain.encode_special_tokens = True
    user_text = plain.encode("user\nhi <|im_end|> there<|im_start|>", add_special_tokens=False).ids
    assert ids[1 : 1 + len(user_text)] == user_text
    assert ids[1 + len(user_text)] == im_end
    assert _learned_runs(tok, ids, mask) == ["ok<|im_end|>"]


def test_non_special_added_tokens_match(tiny_pair):
    tok, ref = tiny_pair
    messages = [Message("user", "q"), Message("assistant", "<think>\nhmm\n</think>\n\nyes")]
    assert tok.tokenize_messages(messages)[0] == _reference_ids(ref, messages)


def test_train_on_input_unmasks_user_turns(tiny_pair):
    tok, _ = tiny_pair
    messages = [Message("user", "one", masked=False), Message("assistant", "two")]
    ids, mask = tok.tokenize_messages(messages)
    assert _learned_runs(tok, ids, mask) == ["<|im_start|>user\none<|im_end|>\n", "two<|im_end|>"]


def test_truncation(tiny_folder):
    messages = CONVERSATIONS[2]
    full, full_mask = auto_tokenizer(tiny_folder).tokenize_messages(messages)
    right = auto_tokenizer(tiny_folder, max_seq_len=20)
    ids, mask = right.tokenize_messages(messages)
    assert ids == full[:19] + [right.eos_id] and mask == full_mask[:19] + [True]
    left = auto_tokenizer(tiny_folder, max_seq_len=20, truncation_type="left")
    assert left.tokenize_messages(messages) == (full[-20:], full_mask[-20:])
    assert right.tokenize_messages(messages, max_tokens=7) == (full[:7], full_mask[:7])


def test_template_error_names_the_message(tmp_path, tiny_json):
    folder = _write_folder(tmp_path, tiny_json, _tiny_config(ALTERNATING))
    tok = auto_tokenizer(folder)
    bad = [Message("user", "a"), Message("assistant", "b"), Message("assistant", "c")]
    with pytest.raises(UserValueError) as e:
        tok.tokenize_messages(bad)
    msg = str(e.value)
    assert "\n" not in msg and "message 2" in msg and "must alternate" in msg


def test_no_chat_template(tmp_path, tiny_json):
    config = _tiny_config()
    del config["chat_template"]
    folder = _write_folder(tmp_path, tiny_json, config)
    with pytest.raises(UserValueError) as e:
        auto_tokenizer(folder).tokenize_messages(CONVERSATIONS[0])
    assert "\n" not in str(e.value) and "prompt_template" in str(e.value)
    # with a prompt template the contents are encoded as plain text
    tok = auto_tokenizer(folder, prompt_template={"user": ["Q: ", "\n"]})
    ids, mask = tok.tokenize_messages(CONVERSATIONS[0])
    want = tok.encode("Q: Hello, world!\n", add_bos=False, add_eos=False)
    assert ids[: len(want)] == want and all(mask[: len(want)])
    assert ids[-1] == tok.eos_id and not mask[-1]


def test_chat_template_file_wins(tmp_path, tiny_json):
    folder = _write_folder(tmp_path, tiny_json, _tiny_config(ALTERNATING), jinja=CHATML)
    tok, ref = auto_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    messages = CONVERSATIONS[1]
    assert tok.tokenize_messages(messages)[0] == _reference_ids(ref, messages)


def test_missing_files(tmp_path):
    with pytest.raises(UserFileNotFoundError) as e:
        auto_tokenizer(tmp_path)
    assert "\n" not in str(e.value) and "tokenizer.json" in str(e.value)
    with pytest.raises(UserFileNotFoundError):
        auto_tokenizer(tmp_path / "absent")


@pytest.mark.parametrize("declared", [True, False])
def test_sentencepiece_model(tmp_path, declared):
    """A tokenizer.model that is SentencePiece (Llama 2's, in tests/assets). Its control
    pieces are special tokens whether or not tokenizer_config.json declares them (older
    Llama 2 folders do not)."""
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
        "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + "
        "eos_token }}{% endif %}{% endfor %}"
    )
    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": template}
    if declared:
        config["added_tokens_decoder"] = {
            str(i): {"content": t, "special": True} for i, t in enumerate(["<unk>", "<s>", "</s>"])
        }
    folder = _write_folder(tmp_path, None, config)
    (folder / "tokenizer.model").symlink_to(REPO_ROOT / "tests/assets/llama2_tokenizer.model")
    tok = auto_tokenizer(folder)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 2)
    messages = [Message("user", "Hi </s> there"), Message("assistant", "Hello")]
    ids, mask = tok.tokenize_messages(messages)
    assert ids[0] == 1 and ids.count(1) == 1 and ids.count(2) == 1 and ids[-1] == 2
    assert tok.decode(ids) == "[INST] Hi </s> there [/INST] Hello"
    assert _learned_runs(tok, ids, mask) == ["Hello"]  # SentencePiece drops </s> in decode
    assert mask[-1] is False


def test_pickles(tiny_pair):
    import pickle

    tok, _ = tiny_pair
    again = pickle.loads(pickle.dumps(tok))
    assert again.tokenize_messages(CONVERSATIONS[2]) == tok.tokenize_messages(CONVERSATIONS[2])


# ----- real tokenizers and official templates (shared/data) -----


def _shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs shared/data/{'/'.join(parts)} (absent in CI)")
    return path


def _llama3_config(template: str) -> dict:
    config = json.loads(_shared("tokenizers", "llama3", "tokenizer_config.json").read_text())
    # Llama 3.x Instruct's tokenizer_config.json: eos_token is the end-of-turn token.
    return {**config, "eos_token": "<|eot_id|>", "chat_template": template}


LLAMA_GENERATION = {"eos_token_id": [128001, 128008, 128009]}


def _llama32_template() -> str:
    """Llama 3.2 Instruct's template: 3.1's with today's date from ``strftime_now``."""
    source = LLAMA31_TEMPLATE.read_text()
    old = '{%- if not date_string is defined %}\n    {%- set date_string = "26 Jul 2024" %}\n'
    assert old in source
    new = (
        "{%- if not date_string is defined %}\n    {%- if strftime_now is defined %}\n"
        '        {%- set date_string = strftime_now("%d %b %Y") %}\n    {%- else %}\n'
        '        {%- set date_string = "26 Jul 2024" %}\n    {%- endif %}\n'
    )
    return source.replace(old, new)


@pytest.fixture(scope="module")
def llama_reference():
    folder = _shared("tokenizers", "llama3")
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def llama_folders(tmp_path_factory):
    """One folder per template: 3.1 (official), 3.2 (dated), 3.3 (3.1's, as a .jinja)."""
    json_path = _shared("tokenizers", "llama3", "tokenizer.json")
    root = tmp_path_factory.mktemp("llama")
    official = _shared("chat_templates", "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text()
    return {
        "3.1": _write_folder(root / "3.1", json_path, _llama3_config(official), LLAMA_GENERATION),
        "3.2": _write_folder(
            root / "3.2", json_path, _llama3_config(_llama32_template()), LLAMA_GENERATION
        ),
        "3.3": _write_folder(
            root / "3.3",
            json_path,
            {**_llama3_config(""), "chat_template": None},
            LLAMA_GENERATION,
            jinja=official,
        ),
    }


@pytest.mark.parametrize("version", ["3.1", "3.2", "3.3"])
def test_real_llama3_templates(llama_folders, llama_reference, version):
    folder = llama_folders[version]
    tok = auto_tokenizer(folder)
    template = tok.chat_template.source
    assert (tok.bos_id, tok.eos_id, tok.stop_tokens) == (128000, 128009, [128009, 128001, 128008])
    for messages in CONVERSATIONS:
        ids, mask = tok.tokenize_messages(messages)
        assert ids == _reference_ids(llama_reference, messages, chat_template=template)
        want = [m.content.strip() + "<|eot_id|>" for m in messages if m.role == "assistant"]
        assert _learned_runs(tok, ids, mask) == want
    if version == "3.2":
        assert "Today Date: 05 Mar 2025" in tok.decode(ids)


def test_real_llama3_tiktoken_model(tmp_path, llama_reference):
    """tokenizer.model (tiktoken ranks) gives the ids of tokenizer.json."""
    official = _shared("chat_templates", "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text()
    folder = _write_folder(tmp_path, None, _llama3_config(official), LLAMA_GENERATION)
    (folder / "tokenizer.model").symlink_to(_shared("tokenizers", "llama3", "tokenizer.model"))
    tok = auto_tokenizer(folder)
    for messages in CONVERSATIONS[1:3]:
        ids, _ = tok.tokenize_messages(messages)
        assert ids == _reference_ids(llama_reference, messages, chat_template=official)
    ids, _ = tok.tokenize_messages([Message("user", "a <|eot_id|> b"), Message("assistant", "c")])
    assert ids.count(128009) == 3  # the system, user and assistant turn ends only


@pytest.mark.parametrize("family", ["qwen2.5", "qwen3"])
def test_real_qwen_templates(family):
    folder = _shared("tokenizers", family)
    tok, ref = auto_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    if family == "qwen2.5":
        official = _shared("chat_templates", "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
        assert tok.chat_template.source == official
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (None, 151645, 151643)
    reasoning = [
        Message("user", "Why?"),
        Message("assistant", "<think>\nLet me see.\n</think>\n\nBecause."),
        Message("user", "And then?"),
        Message("assistant", "<think>\nHmm.\n</think>\n\nThen this."),
    ]
    for messages in CONVERSATIONS + [reasoning]:
        ids, mask = tok.tokenize_messages(messages)
        assert ids == _reference_ids(ref, messages)
        runs = _learned_runs(tok, ids, mask)
        assert len(runs) == sum(m.role == "assistant" for m in messages)
        assert all(r.endswith("<|im_end|>") for r in runs)
        if family == "qwen3":
            # the last turn is written with its (possibly empty) <think> block, learned
            assert runs[-1].startswith("<think>\n")
        else:
            want = [m.content + "<|im_end|>" for m in messages if m.role == "assistant"]
            # a piece crossing the header's "\n" into the content is learned too
            assert all(r.endswith(w) and not r[: -len(w)].strip() for r, w in zip(runs, want))
    prompt = CONVERSATIONS[1][:2]
    ids, _ = tok.tokenize_messages(prompt + [Message("assistant", "")], add_end_tokens=False)
    assert ids == _reference_ids(ref, prompt, add_generation_prompt=True)
    if family == "qwen3":
        no_think = auto_tokenizer(folder, chat_template_kwargs={"enable_thinking": False})
        ids, _ = no_think.tokenize_messages(prompt + [Message("assistant", "")], False)
        assert ids == _reference_ids(ref, prompt, add_generation_prompt=True, enable_thinking=False)
