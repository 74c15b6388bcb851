"""The named tokenizers of Mistral, Phi-3 and Phi-4 against transformers: plain text on the
alpaca records, and conversations in each family's published chat template, id for id.

Conversations: the reference is transformers' ``AutoTokenizer`` over a folder laid out as
the model's Hub repository lays it out: the tokenizer files (Llama 2's ``tokenizer.model``
is Mistral 7B's and Phi-3's base vocabulary; Phi-4's is a tiny cl100k-style BPE here,
written as both ``tokenizer.json`` and ``vocab.json`` + ``merges.txt``) and a
``tokenizer_config.json`` with the published settings and template
(tests/assets/chat_templates, see its README).

Plain text: the reference library of each vocabulary: ``sentencepiece`` for a
``tokenizer.model`` (what Mistral's and Microsoft's own code runs), ``tokenizers`` for
Phi-4. transformers 5 runs a ``tokenizer.model`` through ``tokenizers`` after converting
it, and the two libraries split a run of spaces differently ("\n  [" is "▁", "▁[" in
sentencepiece, "▁▁", "[" converted); the conversations compared with transformers hold
no such run, so the comparison is of the template and its tokenization, not of that known
difference between the libraries.
"""

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from phi4_tokenizer_files import write_phi4_tokenizer
from torchtune._errors import UserValueError
from torchtune.data import Message
from torchtune.models.mistral import mistral_tokenizer
from torchtune.models.mistral._tokenizer import MISTRAL_CHAT_TEMPLATE
from torchtune.models.phi3 import PHI3_CHAT_TEMPLATE, PHI3_SPECIAL_TOKENS, phi3_mini_tokenizer
from torchtune.models.phi4 import PHI4_CHAT_TEMPLATE, PHI4_SPECIAL_TOKENS, phi4_tokenizer

transformers = pytest.importorskip("transformers")

ASSETS = Path(__file__).parents[2] / "assets"
SP_MODEL = ASSETS / "llama2_tokenizer.model"
TEMPLATES = ASSETS / "chat_templates"
ALPACA = json.loads((ASSETS / "alpaca_1000.json").read_text())[:200]


def _conversations():
    """Multi-turn conversations from alpaca: with and without a system message, content
    with leading/trailing spaces and newlines (no runs of spaces: module docstring)."""
    out = []
    records = [r for r in ALPACA if not any("  " in v for v in r.values())]
    for k, r in enumerate(records[:40]):
        user = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
        turns = [Message("user", user), Message("assistant", r["output"]),
                 Message("user", "Thanks!\nOne more?"), Message("assistant", "You're welcome.\n")]
        if k % 2:
            turns = [Message("system", "Answer briefly.")] + turns
        out.append(turns)
    return out


CONVERSATIONS = _conversations()


def _dicts(messages):
    return [{"role": m.role, "content": m.content} for m in messages]


def _reference(folder: Path):
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _template_ids(ref, messages, add_generation_prompt=False):
    out = ref.apply_chat_template(_dicts(messages), tokenize=True,
                                  add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def _learned_text(tok, ids, mask):
    return tok.decode([i for i, m in zip(ids, mask) if not m], skip_special_tokens=False)


def _check_conversations(tok, ref):
    for messages in CONVERSATIONS:
        ids, mask = tok.tokenize_messages(messages)
        assert ids == _template_ids(ref, messages), messages[0].content[:40]
        assert len(mask) == len(ids) and not all(mask)
        # the generation prompt: everything before the last assistant turn, left open
        prompt, _ = tok.tokenize_messages(messages[:-1] + [Message("assistant", "")],
                                          add_end_tokens=False)
        assert prompt == _template_ids(ref, messages[:-1], add_generation_prompt=True)


def _check_plain_text(tok, encode):
    for r in ALPACA:
        for text in (r["instruction"], r["input"], r["output"]):
            assert tok.encode(text, add_bos=False, add_eos=False) == encode(text), text[:40]


def _sentencepiece_encode():
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(SP_MODEL))
    return lambda text: sp.encode(text)


# ----- Mistral 7B Instruct: SentencePiece, [INST] as text -----


@pytest.fixture(scope="module")
def mistral_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mistral-7b-instruct")
    shutil.copy(SP_MODEL, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "legacy": False, "tokenizer_class": "LlamaTokenizer",
        "chat_template": (TEMPLATES / "mistralai-Mistral-7B-Instruct-v0.1.jinja").read_text(),
    }))
    return folder


def test_mistral_template_is_the_published_one():
    assert MISTRAL_CHAT_TEMPLATE == (TEMPLATES / "mistralai-Mistral-7B-Instruct-v0.1.jinja").read_text()


def test_mistral_equals_transformers(mistral_folder):
    tok, ref = mistral_tokenizer(str(SP_MODEL), max_seq_len=None), _reference(mistral_folder)
    _check_plain_text(tok, _sentencepiece_encode())
    _check_conversations(tok, ref)
    ids, mask = tok.tokenize_messages(CONVERSATIONS[0][:2])
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and not mask[-1]
    learned = [i for i, m in zip(ids, mask) if not m]
    assert learned[-1] == tok.eos_id and tok.decode(learned) == CONVERSATIONS[0][1].content


def test_mistral_061_prompt_template_means_the_template(mistral_folder):
    """0.6.1's default, ``MistralChatTemplate``, names the format the template writes:
    the tags are not written twice."""
    explicit = mistral_tokenizer(str(SP_MODEL), prompt_template="torchtune.models.mistral.MistralChatTemplate")
    assert explicit.prompt_template is None
    messages = CONVERSATIONS[0]
    assert explicit.tokenize_messages(messages) == mistral_tokenizer(str(SP_MODEL)).tokenize_messages(messages)
    with pytest.raises(UserValueError, match=r"message 1 \(role 'user'\).*must alternate"):
        explicit.tokenize_messages([Message("user", "a"), Message("user", "b")])


# ----- Phi-3: SentencePiece + added chat tokens that eat the newline after them -----


@pytest.fixture(scope="module")
def phi3_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phi-3-mini-instruct")
    shutil.copy(SP_MODEL, folder / "tokenizer.model")
    base = {0: ("<unk>", False, True), 1: ("<s>", False, True), 2: ("</s>", True, False)}
    added = {i: (t, t != "<|endoftext|>", True) for t, i in PHI3_SPECIAL_TOKENS.items()}
    # microsoft/Phi-3.5-mini-instruct's tokenizer_config.json (Phi-3-mini-4k's is the same
    # but for its template's handling of an empty system message).
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_eos_token": False, "bos_token": "<s>",
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<unk>",
        "legacy": False, "tokenizer_class": "LlamaTokenizer",
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": r,
                     "single_word": False, "special": s}
            for i, (t, r, s) in {**base, **added}.items()},
        "chat_template": (TEMPLATES / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(),
    }))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [32000, 32001, 32007]}))
    return folder


def test_phi3_equals_transformers(phi3_folder):
    tok, ref = phi3_mini_tokenizer(str(SP_MODEL)), _reference(phi3_folder)
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.stop_tokens) == (len(ref), None, 32000, [32000, 32001, 32007])
    _check_plain_text(tok, _sentencepiece_encode())
    _check_conversations(tok, ref)
    ids, mask = tok.tokenize_messages(CONVERSATIONS[0][:2])
    # <|user|> content <|end|> <|assistant|> content <|end|> <|endoftext|>: no "\n" ids
    assert ids[0] == 32010 and ids.count(13) == CONVERSATIONS[0][0].content.count("\n")
    assert _learned_text(tok, ids, mask) == CONVERSATIONS[0][1].content + "<|end|>"


def test_phi3_template_matches_the_published_ones():
    """Phi-3 mini 4k's template (the builder's) renders as Phi-3.5 mini's published one
    wherever a system message has content (they differ only for an empty one)."""
    from torchtune.tokenizers._chat_template import ChatTemplate

    ours = ChatTemplate(PHI3_CHAT_TEMPLATE, "phi3", {"eos_token": "<|endoftext|>"})
    published = ChatTemplate((TEMPLATES / "microsoft-Phi-3.5-mini-instruct.jinja").read_text(),
                             "phi3.5", {"eos_token": "<|endoftext|>"})
    for messages in CONVERSATIONS[:4]:
        for gen in (False, True):
            assert ours.render(_dicts(messages), gen) == published.render(_dicts(messages), gen)


def test_phi3_auto_tokenizer_reads_the_folder_the_same_way(phi3_folder):
    """The folder path: ``auto_tokenizer`` honours ``added_tokens_decoder``'s ids and
    ``rstrip`` and ``legacy: false`` for a ``tokenizer.model``, as transformers does."""
    from torchtune.tokenizers import auto_tokenizer

    tok, ref = auto_tokenizer(phi3_folder), _reference(phi3_folder)
    assert tok.stop_tokens == [32000, 32001, 32007] and tok.vocab_size == 32011
    for messages in CONVERSATIONS[:6]:
        assert tok.tokenize_messages(messages)[0] == _template_ids(ref, messages)


# ----- Phi-4: cl100k-style byte-level BPE, <|im_start|>role<|im_sep|> -----


def _phi4_files(folder: Path) -> None:
    """tests/phi4_tokenizer_files.py's files with microsoft/phi-4's tokenizer_config.json."""
    write_phi4_tokenizer(folder, [r["instruction"] + "\n" + r["output"] for r in ALPACA], PHI4_SPECIAL_TOKENS)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|dummy_85|>",
        # microsoft/phi-4 names GPT2Tokenizer, which in transformers 5 swaps the file's
        # cl100k split for GPT-2's regex; the generic class reads tokenizer.json as it is.
        "unk_token": "<|endoftext|>", "add_bos_token": False, "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": (TEMPLATES / "microsoft-phi-4.jinja").read_text(),
    }))


@pytest.fixture(scope="module")
def phi4_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phi-4")
    _phi4_files(folder)
    return folder


def test_phi4_template_is_the_published_one():
    assert PHI4_CHAT_TEMPLATE == (TEMPLATES / "microsoft-phi-4.jinja").read_text()


@pytest.mark.parametrize("files", ["vocab+merges", "tokenizer.json"])
def test_phi4_equals_transformers(phi4_folder, files):
    if files == "vocab+merges":
        tok = phi4_tokenizer(str(phi4_folder / "vocab.json"), str(phi4_folder / "merges.txt"))
    else:
        tok = phi4_tokenizer(str(phi4_folder / "tokenizer.json"))
    ref = _reference(phi4_folder)
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (100_352, None, 100_265, 100_349)
    assert PHI4_SPECIAL_TOKENS["<|im_start|>"] == 100_264 and PHI4_SPECIAL_TOKENS["<|endofprompt|>"] == 100_276
    raw = Tokenizer.from_file(str(phi4_folder / "tokenizer.json"))
    _check_plain_text(tok, lambda text: raw.encode(text, add_special_tokens=False).ids)
    _check_conversations(tok, ref)
    ids, mask = tok.tokenize_messages(CONVERSATIONS[0][:2])
    assert ids[:2] == [100_264, tok.encode("user", add_bos=False, add_eos=False)[0]]
    assert _learned_text(tok, ids, mask) == CONVERSATIONS[0][1].content + "<|im_end|>"


def test_phi4_refuses_a_vocabulary_without_its_ids(tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n")
    with pytest.raises(UserValueError, match=r"do not follow its 3 tokens"):
        phi4_tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    with pytest.raises(UserValueError, match="vocab_path is required"):
        phi4_tokenizer()


# ----- Mistral Nemo / Small 3: a Tekken tokenizer.json, [INST] as control tokens -----


def test_tekken_folder_equals_transformers(tmp_path):
    """A Nemo-style folder: a byte-level BPE tokenizer.json whose first ids are Tekken's
    control tokens (<unk> <s> </s> [INST] [/INST] ...), no tokenizer.model, and Mistral
    Nemo's published template (llama.cpp's vendored copy). ``auto_tokenizer`` renders and
    encodes it as transformers does, [INST] and [/INST] as control ids."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from torchtune.tokenizers import auto_tokenizer

    controls = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([r["instruction"] + "\n" + r["output"] for r in ALPACA], trainers.BpeTrainer(
        vocab_size=700, special_tokens=controls, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": (TEMPLATES / "mistralai-Mistral-Nemo-Instruct-2407.jinja").read_text()}))
    ours, ref = auto_tokenizer(tmp_path), _reference(tmp_path)
    assert (ours.bos_id, ours.eos_id) == (1, 2)
    for messages in CONVERSATIONS[:10]:
        ids, mask = ours.tokenize_messages(messages)
        assert ids == _template_ids(ref, messages)
        assert ids[0] == 1 and ids.count(3) == ids.count(4) == 2  # two user turns
        assert _learned_text(ours, ids, mask).endswith(messages[-1].content + "</s>")
