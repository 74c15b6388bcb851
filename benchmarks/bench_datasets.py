"""How fast Alpaca-sized data is tokenized and packed.

The 5,000 real Alpaca records (shared/data/alpaca/alpaca_5000.json, or the 1,000 in
tests/assets if that is absent) are repeated to 52,002 records, the size of the full
Alpaca set, and written to a temporary json file. For num_proc 1 and 2, each in a fresh
Hugging Face cache, the script builds ``alpaca_dataset`` twice (the second build finds the
first's ``.map`` cache) and packs it into rows of max_seq_len tokens. "load" is the json
to Arrow conversion, timed apart; "cold" is tokenizing with ``Dataset.map``; "warm" is the
same build again, served from the cache; "pack" is ``PackedDataset`` over the result::

    python benchmarks/bench_datasets.py [--records 52002] [--max-seq-len 512]
"""

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import datasets

from torchtune.datasets import alpaca_dataset, PackedDataset
from torchtune.datasets._tokenized import load_hf_dataset
from torchtune.tokenizers import SentencePieceTokenizer

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    REPO.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json",
    REPO / "tests" / "assets" / "alpaca_1000.json",
]


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _row(num_proc: int, step: str, secs: float, n_tokens: int, note: str = "") -> None:
    rate = n_tokens / secs
    print(f"{num_proc:>8} {step:>6} {secs:>8.2f} {n_tokens:>11,} {rate:>11,.0f}   {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=52_002)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument(
        "--tokenizer", default=str(REPO / "tests" / "assets" / "llama2_tokenizer.model")
    )
    args = parser.parse_args()
    datasets.disable_progress_bars()
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s")

    source = next(p for p in SOURCES if p.exists())
    base = json.loads(source.read_text())
    records = (base * (args.records // len(base) + 1))[: args.records]
    tok = SentencePieceTokenizer(args.tokenizer)
    print(f"{len(records)} records ({len(base)} real ones from {source.name}, repeated), "
          f"max_seq_len={args.max_seq_len}")

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "alpaca_52k.json"
        data.write_text(json.dumps(records))
        print(f"{'num_proc':>8} {'build':>6} {'seconds':>8} {'tokens':>11} {'tokens/s':>11}")
        for num_proc in (1, 2):
            cache = str(Path(tmp) / f"cache_{num_proc}")
            _, secs = _timed(lambda: load_hf_dataset("json", data_files=str(data), cache_dir=cache))
            print(f"{num_proc:>8} {'load':>6} {secs:>8.2f}   (json -> Arrow, once per cache)")
            for build in ("cold", "warm"):
                ds, secs = _timed(lambda: alpaca_dataset(
                    tok, source="json", data_files=str(data), cache_dir=cache,
                    max_seq_len=args.max_seq_len, num_proc=num_proc,
                ))
                n_tokens = sum(len(t) for t in ds.hf_dataset["tokens"])
                _row(num_proc, build, secs, n_tokens)
            packed, secs = _timed(lambda: PackedDataset(ds, args.max_seq_len, tok.pad_id))
            _row(num_proc, "pack", secs, n_tokens, f"-> {len(packed)} rows of {args.max_seq_len}")
        n_rows = min(len(packed), 2000)
        _, secs = _timed(lambda: [packed[i] for i in range(n_rows)])
        print(f"reading packed rows: {n_rows / secs:,.0f} rows/s")


if __name__ == "__main__":
    main()
