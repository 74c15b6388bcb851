"""Helpers of the Qwen tokenizer tests (a tiny tokenizer.json, template rendering)."""

import json
from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import decoders, models, normalizers, pre_tokenizers, Regex, Tokenizer

HERE = Path(__file__).parent
REPO_ROOT = Path(__file__).parents[4]
ASSETS = REPO_ROOT / "tests" / "assets"
SHARED_TOKENIZERS = REPO_ROOT.parent / "shared" / "data" / "tokenizers"

QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen 3's added tokens at 151643.. in order, with their "special" flags (tokenizer.json).
QWEN3_ADDED = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]  # fmt: skip

# A few merges so BPE has work to do (each merged token is added to the vocabulary).
_MERGES = [
    ("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("Ċ", "Ċ")
]  # fmt: skip


def tiny_tokenizer_json() -> str:
    """A byte-level BPE with Qwen's normalizer, split regex and added tokens at Qwen's
    ids (151643..151668): the 256 byte symbols, a few merges, and unused filler ids."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in _MERGES:
        vocab[a + b] = len(vocab)
    for i in range(len(vocab), 151643):
        vocab[f"<unused_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_MERGES))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    data = json.loads(tok.to_str())
    data["added_tokens"] = [
        dict(id=151643 + k, content=c, single_word=False, lstrip=False, rstrip=False,
             normalized=False, special=s)
        for k, (c, s) in enumerate(QWEN3_ADDED)
    ]  # fmt: skip
    return json.dumps(data)


def shared_dir(name: str) -> Path:
    path = SHARED_TOKENIZERS / name
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"needs shared/data/tokenizers/{name} (not in a user's clone)")
    return path


def render(template: str, messages, add_generation_prompt: bool, **extra) -> str:
    """Render a chat template as transformers does (sandboxed, trim_blocks, lstrip_blocks,
    loopcontrols, a tojson filter), with tools=None."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    msgs = [{"role": "tool" if m.role == "ipython" else m.role, "content": m.content}
            for m in messages]  # fmt: skip
    return env.from_string(template).render(
        messages=msgs, add_generation_prompt=add_generation_prompt, tools=None, **extra
    )


def template_text(name: str) -> str:
    return (HERE / f"{name}_chat_template.jinja").read_text(encoding="utf-8")
