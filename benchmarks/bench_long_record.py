"""Peak memory and time of ``encode_truncated`` against a full encode on one huge record
without whitespace.

The record is the TinyStories sample (tests/assets) with every space and newline removed,
repeated to ``--chars`` characters: one "word" that no exact cut (a space after a word)
can split. Each measurement runs in a fresh interpreter that builds the record, resets
Linux's peak-RSS counter (``/proc/self/clear_refs``), then encodes; the figure is how far
the peak (``VmHWM``) rose above the RSS before encoding. The full encode runs on the
first ``--full-chars`` characters only, since on 60 MB it takes minutes (151 s with Qwen
2.5's tokenizer.json)::

    python benchmarks/bench_long_record.py [--chars 60000000] [--full-chars 10000000]
        [--max-tokens 2048]

Tokenizers: Llama 2's SentencePiece model and Llama 3's tiktoken ranks (tests/assets),
and Qwen 2.5's tokenizer.json when shared/data/tokenizers/qwen2.5 is there.
"""

import argparse
import json
import lzma
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tests" / "assets"
QWEN2_5 = REPO.parent / "shared" / "data" / "tokenizers" / "qwen2.5" / "tokenizer.json"


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def _load(name: str, path: str):
    if name == "llama2":
        from torchtune.tokenizers import SentencePieceTokenizer

        return SentencePieceTokenizer(path)
    if name == "llama3":
        from torchtune.models.llama3 import llama3_tokenizer

        return llama3_tokenizer(path)
    from torchtune.models.qwen2_5 import qwen2_5_tokenizer

    return qwen2_5_tokenizer(path)


def _worker(name: str, path: str, mode: str, chars: int, max_tokens: int) -> None:
    """Build the record, encode it one way, print one JSON line of figures."""
    from torchtune.tokenizers import encode_truncated

    tok = _load(name, path)
    story = (ASSETS / "tinystories_sample_eot.txt").read_text(encoding="utf-8")
    block = "".join(story.split())
    text = (block * (chars // len(block) + 1))[:chars]
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak restarts from the current RSS
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    if mode == "truncated":
        ids = encode_truncated(tok, text, max_tokens)
    else:
        ids = tok.encode(text)
    secs = time.perf_counter() - start
    print(json.dumps({"mb": _status_mb("VmHWM") - before, "secs": secs, "ids": len(ids),
                      "head": ids[:max_tokens]}))  # fmt: skip


def _measure(name, path, mode, chars, max_tokens) -> dict:
    args = [sys.executable, __file__, "--worker", name, path, mode, str(chars), str(max_tokens)]
    run = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        name, path, mode, chars, max_tokens = sys.argv[2:7]
        _worker(name, path, mode, int(chars), int(max_tokens))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=60_000_000)
    parser.add_argument("--full-chars", type=int, default=10_000_000)
    parser.add_argument("--max-tokens", type=int, default=2048)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        llama3 = Path(folder) / "tokenizer.model"
        llama3.write_bytes(lzma.decompress((ASSETS / "llama3_tokenizer.model.xz").read_bytes()))
        tokenizers = [("llama2", str(ASSETS / "llama2_tokenizer.model")), ("llama3", str(llama3))]
        if QWEN2_5.is_file():
            tokenizers.append(("qwen2.5", str(QWEN2_5)))
        else:
            print(f"(no {QWEN2_5}: Qwen 2.5 skipped)")
        print(f"record: TinyStories without whitespace; max_tokens {args.max_tokens}")
        print(f"{'tokenizer':>10} {'how':>22} {'chars':>12} {'peak MB':>9} {'secs':>8} {'ids':>11}")
        for name, path in tokenizers:
            cut = _measure(name, path, "truncated", args.chars, args.max_tokens)
            full = _measure(name, path, "full", args.full_chars, args.max_tokens)
            for how, chars, r in (("encode_truncated", args.chars, cut),
                                  ("full encode", args.full_chars, full)):  # fmt: skip
                print(f"{name:>10} {how:>22} {chars:>12,} {r['mb']:>9.1f} {r['secs']:>8.2f} "
                      f"{r['ids']:>11,}")  # fmt: skip
            # The full encode of the record's first --full-chars characters is a third cut,
            # far from both of encode_truncated's: the first ids should agree with it.
            print(f"{'':>10} first {args.max_tokens} ids equal: {cut['head'] == full['head']}")


if __name__ == "__main__":
    main()
