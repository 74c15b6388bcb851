"""Convert llama2.c's stories260K.bin (legacy export) into a Meta-format checkpoint.

Writes ``consolidated.00.pth`` (Meta key names, fp32), ``params.json`` and a copy of the
SentencePiece ``tokenizer.model``. The bundled model in ``torchtune/assets/stories260K`` was made with::

    python scripts/convert_stories260k.py \\
        --bin ../shared/data/models/stories260K/stories260K.bin \\
        --tokenizer ../shared/data/tokenizers/tok512/tok512.model \\
        --output-dir torchtune/assets/stories260K

The legacy layout (``run.c``'s ``read_checkpoint`` / ``export.py``'s ``legacy_export`` in
karpathy/llama2.c): a header of 7 little-endian int32 ``dim, hidden_dim, n_layers, n_heads,
n_kv_heads, vocab_size, seq_len`` (negative vocab_size: classifier stored separately), then
fp32 arrays, each per-layer tensor stacked over all layers, matrices in ``nn.Linear``
(out, in) order.
"""

import argparse
import json
import shutil
import struct
from pathlib import Path

import torch

_HEADER = struct.Struct("<7i")
# llama2.c trains these models with RMSNorm eps 1e-5 and does not store it.
_NORM_EPS = 1e-5


def _meta_multiple_of(dim: int, hidden_dim: int) -> int:
    """A ``multiple_of`` for which Meta's FFN formula gives ``hidden_dim``, if one exists.

    Meta (and llama2.c's model.py) compute ``h = int(2 * 4 * dim / 3)`` rounded up to a
    multiple of ``multiple_of``. Returns 0 if no value in 1..256 reproduces ``hidden_dim``.
    """
    h = int(2 * 4 * dim / 3)
    for m in range(1, 257):
        if m * ((h + m - 1) // m) == hidden_dim:
            return m
    return 0


def read_llama2c_legacy(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a llama2.c legacy ``.bin`` into a config dict and a Meta-named fp32 state dict.

    Args:
        path (Path): the ``.bin`` file.

    Returns:
        tuple[dict, dict[str, torch.Tensor]]: the header as a dict and the state dict.

    Raises:
        ValueError: if the file size does not match the header.
    """
    data = path.read_bytes()
    dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = _HEADER.unpack_from(data)
    shared_classifier = vocab_size > 0
    vocab_size = abs(vocab_size)
    head_dim = dim // n_heads
    kv_dim = head_dim * n_kv_heads
    floats = torch.frombuffer(bytearray(data[_HEADER.size :]), dtype=torch.float32)

    offset = 0

    def take(*shape: int) -> torch.Tensor:
        nonlocal offset
        n = 1
        for s in shape:
            n *= s
        if offset + n > floats.numel():
            raise ValueError(f"{path}: file ends early; the header {shape} asks for more data")
        t = floats[offset : offset + n].reshape(shape).clone()
        offset += n
        return t

    tok_embeddings = take(vocab_size, dim)
    attention_norm = take(n_layers, dim)
    wq = take(n_layers, dim, dim)
    wk = take(n_layers, kv_dim, dim)
    wv = take(n_layers, kv_dim, dim)
    wo = take(n_layers, dim, dim)
    ffn_norm = take(n_layers, dim)
    w1 = take(n_layers, hidden_dim, dim)
    w2 = take(n_layers, dim, hidden_dim)
    w3 = take(n_layers, hidden_dim, dim)
    norm = take(dim)
    take(seq_len, head_dim // 2)  # legacy RoPE cos table: unused, RoPE is recomputed
    take(seq_len, head_dim // 2)  # legacy RoPE sin table
    output = tok_embeddings.clone() if shared_classifier else take(vocab_size, dim)
    if offset != floats.numel():
        raise ValueError(f"{path}: {floats.numel() - offset} trailing floats after the weights")

    sd = {"tok_embeddings.weight": tok_embeddings}
    for i in range(n_layers):
        sd[f"layers.{i}.attention.wq.weight"] = wq[i].clone()
        sd[f"layers.{i}.attention.wk.weight"] = wk[i].clone()
        sd[f"layers.{i}.attention.wv.weight"] = wv[i].clone()
        sd[f"layers.{i}.attention.wo.weight"] = wo[i].clone()
        sd[f"layers.{i}.feed_forward.w1.weight"] = w1[i].clone()
        sd[f"layers.{i}.feed_forward.w2.weight"] = w2[i].clone()
        sd[f"layers.{i}.feed_forward.w3.weight"] = w3[i].clone()
        sd[f"layers.{i}.attention_norm.weight"] = attention_norm[i].clone()
        sd[f"layers.{i}.ffn_norm.weight"] = ffn_norm[i].clone()
    sd["norm.weight"] = norm
    sd["output.weight"] = output
    header = {
        "dim": dim,
        "hidden_dim": hidden_dim,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "vocab_size": vocab_size,
        "seq_len": seq_len,
        "shared_classifier": shared_classifier,
    }
    return header, sd


def meta_params(header: dict) -> dict:
    """Meta-style ``params.json`` for the header, with the FFN width stated explicitly."""
    return {
        "dim": header["dim"],
        "n_layers": header["n_layers"],
        "n_heads": header["n_heads"],
        "n_kv_heads": header["n_kv_heads"],
        "vocab_size": header["vocab_size"],
        "multiple_of": _meta_multiple_of(header["dim"], header["hidden_dim"]),
        "norm_eps": _NORM_EPS,
        "max_seq_len": header["seq_len"],
        # Not a Meta key: readers should not have to re-derive the width from multiple_of.
        "hidden_dim": header["hidden_dim"],
    }


def convert(bin_path: Path, tokenizer_path: Path, output_dir: Path) -> dict:
    """Write ``consolidated.00.pth``, ``params.json`` and ``tokenizer.model`` to ``output_dir``.

    Returns:
        dict: the params written to ``params.json``.
    """
    header, sd = read_llama2c_legacy(bin_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.to(torch.float32).contiguous() for k, v in sd.items()}
    torch.save(sd, output_dir / "consolidated.00.pth")
    params = meta_params(header)
    (output_dir / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    shutil.copyfile(tokenizer_path, output_dir / "tokenizer.model")
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", type=Path, required=True, help="llama2.c legacy .bin file")
    parser.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece .model")
    parser.add_argument("--output-dir", type=Path, required=True, help="Meta checkpoint folder")
    args = parser.parse_args()
    for p in (args.bin, args.tokenizer):
        if not p.is_file():
            parser.error(f"no such file: {p}")
    params = convert(args.bin, args.tokenizer, args.output_dir)
    print(f"Wrote {args.output_dir}: {json.dumps(params)}")


if __name__ == "__main__":
    main()
