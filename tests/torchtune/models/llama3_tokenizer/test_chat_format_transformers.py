"""The default Llama 3 chat format equals transformers' ``apply_chat_template`` with the
official Llama 3.1 Instruct template, on the shared Llama 3 tokenizer files
(shared/data/tokenizers/llama3, shared/data/chat_templates); skipped without them or
without transformers. The Llama 3.2 format is the same template dated today, as 3.2's
template (``strftime_now("%d %b %Y")``) dates it.
"""

from datetime import datetime
from pathlib import Path

import pytest

from torchtune.data import Message
from torchtune.models.llama3 import llama3_tokenizer

SHARED = Path(__file__).parents[4] / ".." / "shared" / "data"
TOKENIZER_DIR = SHARED / "tokenizers" / "llama3"
TEMPLATE = SHARED / "chat_templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja"

CONVERSATIONS = [
    [("user", "What is the capital of France?"), ("assistant", "Paris.")],
    [("system", "You are terse."), ("user", "Capital of Italy?"), ("assistant", "Rome.")],
    [("system", ""), ("user", "Hi"), ("assistant", "Hello.")],
    [
        ("system", "  You answer in one line.\n"),
        ("user", "Write a haiku about rain."),
        ("assistant", "Soft rain on the roof\nwhispers to the sleeping town\nmorning smells"),
        ("user", " And one about snow? 😀 "),
        ("assistant", "White hush on the hills: 1234 flakes, naïve and cold.\n\n"),
    ],
]


@pytest.fixture(scope="module")
def hf():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("jinja2")
    if not (TOKENIZER_DIR / "tokenizer.json").is_file() or not TEMPLATE.is_file():
        pytest.skip("needs shared/data/tokenizers/llama3 and shared/data/chat_templates")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(TOKENIZER_DIR / "tokenizer.json"),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        chat_template=TEMPLATE.read_text(),
    )


@pytest.fixture(scope="module")
def ours(hf):
    return llama3_tokenizer(str(TOKENIZER_DIR / "tokenizer.model"))


def apply_chat_template(hf, turns, add_generation_prompt=False, **kwargs):
    messages = [{"role": r, "content": c} for r, c in turns]
    out = hf.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, **kwargs
    )
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("turns", CONVERSATIONS, ids=["no_system", "system", "empty_system", "multi"])
def test_default_format_equals_apply_chat_template(hf, ours, turns):
    tokens, mask = ours.tokenize_messages([Message(*t) for t in turns])
    # Ours ends a training sample with <|end_of_text|>, the one id the template leaves out.
    assert tokens[:-1] == apply_chat_template(hf, turns) and tokens[-1] == ours.eos_id
    assert len(mask) == len(tokens)


@pytest.mark.parametrize("turns", CONVERSATIONS[:2], ids=["no_system", "system"])
def test_generation_prompt_equals_apply_chat_template(hf, ours, turns):
    prompt = turns[:-1]
    tokens, _ = ours.tokenize_messages(
        [Message(*t) for t in prompt] + [Message("assistant", "")], add_end_tokens=False
    )
    assert tokens == apply_chat_template(hf, prompt, add_generation_prompt=True)


def test_llama3_2_format_is_dated_today(hf):
    today = datetime.now().strftime("%d %b %Y")
    ours = llama3_tokenizer(str(TOKENIZER_DIR / "tokenizer.model"), chat_format="llama3_2")
    turns = CONVERSATIONS[1]
    tokens, _ = ours.tokenize_messages([Message(*t) for t in turns])
    assert tokens[:-1] == apply_chat_template(hf, turns, date_string=today)


def test_torchtune_061_format_has_no_system_header(hf, ours):
    old = llama3_tokenizer(str(TOKENIZER_DIR / "tokenizer.model"), chat_format="torchtune_061")
    turns = CONVERSATIONS[0]
    tokens, _ = old.tokenize_messages([Message(*t) for t in turns])
    expected = apply_chat_template(hf, turns)
    # the template's ids without its whole system turn (BOS kept)
    assert tokens[:-1] == expected[:1] + expected[expected.index(ours.eot_id) + 1 :]
