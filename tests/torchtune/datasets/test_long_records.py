"""Only what a truncated sample keeps is encoded: the same ids as encoding each text whole
and then truncating, at a memory cost that follows max_seq_len, not the record."""

import json
import random
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import sentencepiece

from torchtune.data import AlpacaInstructTemplate, Llama2ChatFormat, Message
from torchtune.datasets import alpaca_dataset, chat_dataset, text_completion_dataset, truncate
from torchtune.tokenizers import SentencePieceTokenizer

ASSETS = Path(__file__).parents[2] / "assets"
IGN = -100
WORDS = ["the", "story", "naïve", "日本語", "😀", "龘", "\u2581", "2024", "end.", "a" * 60]
SEPARATORS = [" ", " ", " ", "  ", " " * 9, "\n", "\n\n", " \n ", "\t", ""]


def long_text(rng: random.Random, n_words: int) -> str:
    """Words, unicode that needs byte fallback and runs without whitespace, separated by
    spaces, runs of spaces, newlines and tabs."""
    return "".join(rng.choice(WORDS) + rng.choice(SEPARATORS) for _ in range(n_words))


# The ids each builder gave before only the kept part was encoded: whole texts, then
# ``truncate``.
def whole_instruct(tok, record, train_on_input, max_seq_len):
    prompt = tok.encode(AlpacaInstructTemplate.format(record), add_bos=True, add_eos=False)
    response = tok.encode(
        record["output"], add_bos=False, add_eos=True, trim_leading_whitespace=True
    )
    prompt_labels = prompt if train_on_input else [IGN] * len(prompt)
    tokens, labels, _ = truncate(
        prompt + response, prompt_labels + response, max_seq_len, tok.eos_id
    )
    return {"tokens": tokens, "labels": labels}


def whole_chat(tok, turns, max_seq_len):  # train_on_input=True
    messages = [Message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    tokens = []
    for m in Llama2ChatFormat.format(messages):
        tokens += tok.encode(m.content, add_bos=m.role == "user", add_eos=m.role != "user")
    tokens, labels, _ = truncate(tokens, list(tokens), max_seq_len, tok.eos_id)
    return {"tokens": tokens, "labels": labels}


def whole_text(tok, text, max_seq_len):
    tokens = tok.encode(text, add_bos=True, add_eos=True)
    tokens, labels, _ = truncate(tokens, list(tokens), max_seq_len, tok.eos_id)
    return {"tokens": tokens, "labels": labels}


@pytest.fixture(scope="module", params=["llama2_tokenizer.model", "tok512.model"])
def tok(request):
    return SentencePieceTokenizer(ASSETS / request.param)


def _items(ds):
    return [ds[i] for i in range(len(ds))]


@pytest.mark.parametrize(
    "max_seq_len, train_on_input",
    [(16, True), (64, True), (256, True), (256, False), (512, False), (None, False)],
)
def test_alpaca_1000_ids_unchanged(tok, tmp_path, max_seq_len, train_on_input):
    records = json.loads((ASSETS / "alpaca_1000.json").read_text())
    ds = alpaca_dataset(
        tok, source="json", data_files=str(ASSETS / "alpaca_1000.json"),
        cache_dir=str(tmp_path), max_seq_len=max_seq_len, train_on_input=train_on_input,
    )
    expected = [whole_instruct(tok, r, train_on_input, max_seq_len) for r in records]
    assert _items(ds) == expected


@pytest.fixture(scope="module")
def long_records(tmp_path_factory):
    """Instruct, chat and text records of up to ~60k characters, in JSON files."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("long")
    instruct = [
        {"instruction": long_text(rng, n_prompt), "input": "", "output": long_text(rng, 5000)}
        for n_prompt in (1, 10, 100, 1000, 3000)
    ]
    chats = [[long_text(rng, n) for n in sizes] for sizes in ([5, 3000], [200, 50, 10, 3000])]
    texts = [long_text(rng, n) for n in (3, 300, 5000)]
    paths = {"instruct": folder / "instruct.json", "chat": folder / "chat.json",
             "text": folder / "text.json"}
    paths["instruct"].write_text(json.dumps(instruct))
    paths["chat"].write_text(json.dumps([
        {"conversations": [
            {"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(c)
        ]} for c in chats
    ]))
    paths["text"].write_text(json.dumps([{"text": t} for t in texts]))
    return {"instruct": instruct, "chat": chats, "text": texts, "paths": paths}


@pytest.mark.parametrize("max_seq_len", [3, 40, 130, 1000, 4000, None])
def test_long_records_ids_unchanged(tok, tmp_path, long_records, max_seq_len):
    paths, cache = long_records["paths"], str(tmp_path)
    instruct = alpaca_dataset(
        tok, source="json", data_files=str(paths["instruct"]), cache_dir=cache,
        max_seq_len=max_seq_len,
    )
    assert _items(instruct) == [
        whole_instruct(tok, r, True, max_seq_len) for r in long_records["instruct"]
    ]
    chat = chat_dataset(
        tok, "json", data_files=str(paths["chat"]), cache_dir=cache,
        max_seq_len=max_seq_len, train_on_input=True,
    )
    assert _items(chat) == [whole_chat(tok, c, max_seq_len) for c in long_records["chat"]]
    text = text_completion_dataset(
        tok, "json", data_files=str(paths["text"]), cache_dir=cache, max_seq_len=max_seq_len
    )
    assert _items(text) == [whole_text(tok, t, max_seq_len) for t in long_records["text"]]


# Runs in a fresh interpreter and reports, per build, how far its peak RSS rose above the
# RSS it started from. Linux's VmHWM is the peak, and writing 5 to clear_refs resets it
# (getrusage's ru_maxrss cannot be reset, and starts at the parent's size).
_BUILD_AND_MEASURE = """
import json, sys
from torchtune.datasets import alpaca_dataset, chat_dataset, text_completion_dataset
from torchtune.tokenizers import SentencePieceTokenizer

files, cache_dir, model = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
tok = SentencePieceTokenizer(model)
kwargs = dict(cache_dir=cache_dir, max_seq_len=512)
builds = {
    "alpaca": lambda: alpaca_dataset(tok, source="json", data_files=files["alpaca"], **kwargs),
    "chat": lambda: chat_dataset(tok, "json", data_files=files["chat"], **kwargs),
    "text": lambda: text_completion_dataset(tok, "text", data_files=files["text"], **kwargs),
}


def status_mb(key):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


increase_mb, tokens = {}, {}
for name, build in builds.items():
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak restarts from the current RSS
    before = status_mb("VmRSS")
    tokens[name] = build()[0]["tokens"]
    increase_mb[name] = status_mb("VmHWM") - before
print(json.dumps({"increase_mb": increase_mb, "tokens": tokens}))
"""

HUGE_CHARS = 50_000_000


def _write_huge_records(folder: Path, huge: str) -> dict:
    files = {"alpaca": folder / "alpaca.json", "chat": folder / "chat.json",
             "text": folder / "text.txt"}
    files["alpaca"].write_text(json.dumps([{"instruction": "Go on.", "input": "", "output": huge}]))
    turns = [{"from": "human", "value": "Go on."}, {"from": "gpt", "value": huge}]
    files["chat"].write_text(json.dumps([{"conversations": turns}]))
    files["text"].write_text(huge + "\n")
    return {name: str(path) for name, path in files.items()}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's VmHWM")
@pytest.mark.parametrize("separator", [" ", "\t"], ids=["spaces", "tabs"])
def test_huge_record_costs_memory_in_proportion_to_max_seq_len(tmp_path, separator):
    """One 50 MB record at max_seq_len=512, for each builder. Encoding it whole raised the
    peak RSS by ~2.5 GB (and took ~45 s) with the Llama 2 tokenizer; encoding only what is
    kept, by 250-350 MB, all of it the record itself: datasets' Arrow-to-Python copy,
    and for chat the formatted turn's copies of it. With tabs in place of every space and
    newline the record has no exact cut (a space after a word), so every prefix is
    checked against a longer one; before that check existed it was encoded whole."""
    story = (ASSETS / "tinystories_sample_eot.txt").read_text()
    story = story.replace("\n", " ").replace(" ", separator)
    huge = (story * (HUGE_CHARS // len(story) + 1))[:HUGE_CHARS]
    files = _write_huge_records(tmp_path, huge)
    cache = str(tmp_path / "cache")
    # Read the files into the datasets cache here, so that the measured builds only map.
    for name, path in files.items():
        source = "text" if name == "text" else "json"
        datasets.load_dataset(source, data_files=path, cache_dir=cache, split="train")
    model = str(ASSETS / "llama2_tokenizer.model")
    run = subprocess.run(
        [sys.executable, "-c", _BUILD_AND_MEASURE, json.dumps(files), cache, model],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert all(mb < 500 for mb in result["increase_mb"].values()), result["increase_mb"]
    # The kept ids are those of the text's head: a cut at a space after a word keeps the
    # ids (torchtune/tokenizers/_truncated.py), and so does a cut at a tab, which no piece
    # of Llama 2's vocabulary contains, so no piece or merge spans it.
    tok = SentencePieceTokenizer(model)
    spm = sentencepiece.SentencePieceProcessor(model_file=model)
    assert not any("\t" in spm.id_to_piece(i) for i in range(spm.vocab_size()))
    head = huge[: huge.index(separator, 20_000)]
    record = {"instruction": "Go on.", "input": "", "output": head}
    expected = {
        "alpaca": whole_instruct(tok, record, True, 512)["tokens"],
        "chat": whole_chat(tok, ["Go on.", head], 512)["tokens"],
        "text": whole_text(tok, head, 512)["tokens"],
    }
    assert all(len(ids) == 512 for ids in expected.values())
    assert result["tokens"] == expected
