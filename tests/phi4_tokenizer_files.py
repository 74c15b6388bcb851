"""Phi-4-shaped tokenizer files for tests: a tiny byte-level BPE with cl100k's split regex,
its ids padded to cl100k's 100,256, and Phi-4's 96 added tokens at 100256-100351; written
as microsoft/phi-4 ships them (``tokenizer.json``, and ``vocab.json`` + ``merges.txt``)."""

import json
from pathlib import Path
from typing import Iterable

from tokenizers import decoders, models, pre_tokenizers, Regex, Tokenizer, trainers

# cl100k_base's pre-tokenizer, as tokenizer.json files write it (test-side copy).
CL100K = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def write_phi4_tokenizer(folder: Path, texts: Iterable[str], added: dict) -> None:
    """Train a 600-token BPE on ``texts``; write tokenizer.json (with ``added``, text -> id),
    vocab.json and merges.txt into ``folder``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CL100K), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for i in range(len(vocab), 100_256):
        vocab[f"<unused_{i}>"] = i
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    full = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    full.pre_tokenizer, full.decoder = tok.pre_tokenizer, tok.decoder
    data = json.loads(full.to_str())
    data["added_tokens"] = [
        dict(id=i, content=t, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True)
        for t, i in added.items()]
    (folder / "tokenizer.json").write_text(json.dumps(data))
