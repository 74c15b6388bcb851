"""Golden text from the bundled stories260K model (the pattern of llama2.c's test_all.py).

EXPECTED is the greedy 60-token continuation of "Once upon a time" recorded in
shared/data/PROVENANCE.md ("stories260K: usability proof"), produced there by an independent
numpy reader of stories260K.bin; its 253-token extension matches the greedy sample that
karpathy/llama2.c doc/stories260K.md documents for this checkpoint.
"""

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from torchtune.generation import generate
from torchtune.tokenizers import SentencePieceTokenizer

REPO_ROOT = Path(__file__).resolve().parents[3]
STORIES_DIR = REPO_ROOT / "torchtune" / "assets" / "stories260K"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

PROMPT = "Once upon a time"
PROMPT_IDS = [1, 403, 407, 261, 378]  # BOS + 4 pieces, from PROVENANCE.md
EXPECTED = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high."
    "\nLily"
)


def test_golden_greedy_text(stories260k):
    tokenizer = SentencePieceTokenizer(str(STORIES_DIR / "tokenizer.model"))
    ids = tokenizer.encode(PROMPT, add_bos=True, add_eos=False)
    assert ids == PROMPT_IDS

    out = generate(stories260k, torch.tensor(ids), max_new_tokens=60, temperature=0)
    assert out.shape == (len(PROMPT_IDS) + 60,)
    assert out[: len(PROMPT_IDS)].tolist() == PROMPT_IDS
    text = tokenizer.decode(out.tolist())
    assert text == EXPECTED
    # The same ids through sentencepiece itself, so the check does not rest on our wrapper.
    raw = spm.SentencePieceProcessor(model_file=str(STORIES_DIR / "tokenizer.model"))
    assert raw.decode(out.tolist()) == EXPECTED


def test_bundled_files_match_readme_checksums():
    readme = (REPO_ROOT / "torchtune" / "assets" / "README.md").read_text()
    listed = dict(re.findall(r"`stories260K/([\w.]+)`\s*\|\s*\d+\s*\|\s*`([0-9a-f]{64})`", readme))
    assert set(listed) == {"consolidated.00.pth", "params.json", "tokenizer.model"}
    for name, digest in listed.items():
        assert hashlib.sha256((STORIES_DIR / name).read_bytes()).hexdigest() == digest, name


def test_bundled_checkpoint_layout():
    sd = torch.load(STORIES_DIR / "consolidated.00.pth", weights_only=True)
    params = json.loads((STORIES_DIR / "params.json").read_text())
    assert params == {
        "dim": 64,
        "n_layers": 5,
        "n_heads": 8,
        "n_kv_heads": 4,
        "vocab_size": 512,
        "multiple_of": 4,
        "norm_eps": 1e-5,
        "max_seq_len": 512,
        "hidden_dim": 172,
    }
    assert len(sd) == 2 + 9 * 5 + 1
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in sd.values())
    assert sd["layers.4.attention.wk.weight"].shape == (32, 64)
    assert sd["layers.0.feed_forward.w2.weight"].shape == (64, 172)
    # The classifier is tied in the source; the Meta file stores it as a separate equal tensor.
    assert torch.equal(sd["output.weight"], sd["tok_embeddings.weight"])
    output_ptr = sd["output.weight"].untyped_storage().data_ptr()
    assert output_ptr != sd["tok_embeddings.weight"].untyped_storage().data_ptr()


@pytest.mark.skipif(
    not (SHARED_DATA / "models" / "stories260K" / "stories260K.bin").is_file(),
    reason="needs shared/data/models/stories260K (not in a user's clone)",
)
def test_converter_reproduces_bundled_checkpoint(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "convert_stories260k", REPO_ROOT / "scripts" / "convert_stories260k.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.convert(
        SHARED_DATA / "models" / "stories260K" / "stories260K.bin",
        SHARED_DATA / "tokenizers" / "tok512" / "tok512.model",
        tmp_path,
    )
    for name in ("consolidated.00.pth", "params.json", "tokenizer.model"):
        assert (tmp_path / name).read_bytes() == (STORIES_DIR / name).read_bytes(), name
