"""Peak RSS of ``load_checkpoint()`` against checkpoint size, for a synthetic ~1B Llama 2.

Writes a synthetic checkpoint (random-free, bf16 by default) in each format, then loads it in
a fresh subprocess per case and reports that process's peak resident set size during the
load (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just before) minus its RSS
just before loading. Every
tensor is read in full after loading (a sum), so memory-mapped pages count too. For
reference, the same files are also read the naive way (``torch.load`` without mmap /
``safetensors.torch.load_file``) followed by the key conversion.

Usage:
    python benchmarks/bench_checkpoint_load.py [--workdir /tmp/bench_ckpt] [--layers 16]

The default shape (d=2048, 16 layers, hidden 5632, vocab 32000) has 0.95B parameters.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, os, sys, time, torch
mode, fmt, folder, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
from torchtune.training.checkpointing import FullModelHFCheckpointer, FullModelMetaCheckpointer
from torchtune.models.llama2._convert_weights import hf_to_tune, meta_to_tune
import safetensors.torch

def hwm_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

# Warm up the kernels the touch loop uses, so their one-off allocations are not counted.
for c in torch.ones(1 << 21, dtype=torch.bfloat16).split(1 << 20):
    float(c.float().sum())
# Reset the kernel's peak-RSS counter (VmHWM) so the peak below belongs to the load alone.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss_mb()
t0 = time.perf_counter()
if mode == "checkpointer":
    cls = FullModelMetaCheckpointer if fmt == "meta" else FullModelHFCheckpointer
    sd = cls(folder, files, "LLAMA2", folder).load_checkpoint()["model"]
else:
    paths = [os.path.join(folder, f) for f in files]
    if fmt == "meta":
        sd = meta_to_tune(torch.load(paths[0], weights_only=True))
    else:
        raw = {}
        for p in paths:
            raw.update(safetensors.torch.load_file(p) if p.endswith(".safetensors")
                       else torch.load(p, weights_only=True))
        cfg = json.load(open(os.path.join(folder, "config.json")))
        sd = hf_to_tune(raw, cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"])
        del raw
total = 0.0
for v in sd.values():  # touch every byte
    total += sum(float(c.float().sum()) for c in v.reshape(-1).split(1 << 20))  # 4 MB temporaries
seconds = time.perf_counter() - t0
peak = hwm_mb()
nbytes = sum(v.numel() * v.element_size() for v in sd.values())
print(json.dumps({"before_mb": before, "peak_mb": peak, "tensor_mb": nbytes / 2**20, "seconds": seconds}))
"""


def _shapes(dim, layers, hidden, vocab, n_heads, n_kv):
    h_d = dim // n_heads
    shapes = {"tok_embeddings.weight": (vocab, dim), "norm.scale": (dim,), "output.weight": (vocab, dim)}
    for i in range(layers):
        shapes.update({
            f"layers.{i}.sa_norm.scale": (dim,),
            f"layers.{i}.attn.q_proj.weight": (n_heads * h_d, dim),
            f"layers.{i}.attn.k_proj.weight": (n_kv * h_d, dim),
            f"layers.{i}.attn.v_proj.weight": (n_kv * h_d, dim),
            f"layers.{i}.attn.output_proj.weight": (dim, n_heads * h_d),
            f"layers.{i}.mlp_norm.scale": (dim,),
            f"layers.{i}.mlp.w1.weight": (hidden, dim),
            f"layers.{i}.mlp.w2.weight": (dim, hidden),
            f"layers.{i}.mlp.w3.weight": (hidden, dim),
        })
    return shapes


def _write(workdir, args):
    import torch
    from safetensors.torch import save_file

    from torchtune.models.llama2._convert_weights import tune_to_hf, tune_to_meta

    shapes = _shapes(args.dim, args.layers, args.hidden, args.vocab, args.heads, args.kv_heads)
    sd = {}
    for i, (k, s) in enumerate(shapes.items()):
        # Distinct, cheap, non-constant values (no RNG needed for a memory benchmark).
        sd[k] = torch.linspace(-1, 1, steps=int(torch.Size(s).numel()), dtype=torch.float32).to(torch.bfloat16).view(s) * (i % 7 + 1)
    n_params = sum(v.numel() for v in sd.values())
    cases = []

    meta_dir = os.path.join(workdir, "meta")
    os.makedirs(meta_dir)
    torch.save(tune_to_meta(sd), os.path.join(meta_dir, "consolidated.00.pth"))
    cases.append(("meta", meta_dir, ["consolidated.00.pth"]))

    hf = tune_to_hf(sd, args.heads, args.kv_heads, args.dim)
    del sd
    keys = list(hf)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2:]]
    config = {"model_type": "llama", "hidden_size": args.dim, "num_attention_heads": args.heads,
              "num_key_value_heads": args.kv_heads, "num_hidden_layers": args.layers,
              "intermediate_size": args.hidden, "vocab_size": args.vocab}
    for fmt in ("safetensors", "bin"):
        folder = os.path.join(workdir, f"hf_{fmt}")
        os.makedirs(folder)
        names = [f"model-0000{i + 1}-of-00002.{fmt}" for i in range(2)]
        for name, part in zip(names, halves):
            tensors = {k: hf[k] for k in part}
            if fmt == "safetensors":
                save_file(tensors, os.path.join(folder, name), metadata={"format": "pt"})
            else:
                torch.save(tensors, os.path.join(folder, name))
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f)
        cases.append((f"hf_{fmt}", folder, names))
    return n_params, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=5632)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints")
    args = parser.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_ckpt_")
    os.makedirs(workdir, exist_ok=True)
    try:
        n_params, cases = _write(workdir, args)
        print(f"synthetic Llama 2: {n_params / 1e9:.2f}B parameters, bf16")
        print(f"{'format':<16}{'loader':<14}{'file MB':>9}{'RSS before':>12}{'peak RSS':>10}"
              f"{'peak-before':>13}{'x size':>8}{'seconds':>9}")
        for fmt, folder, files in cases:
            size = sum(os.path.getsize(os.path.join(folder, f)) for f in files) / 2**20
            for mode in ("checkpointer", "naive"):
                res = subprocess.run(
                    [sys.executable, "-c", _CHILD, mode, fmt.split("_")[0], folder, ",".join(files)],
                    capture_output=True, text=True, check=True,
                )
                r = json.loads(res.stdout.strip().splitlines()[-1])
                grown = r["peak_mb"] - r["before_mb"]
                print(f"{fmt:<16}{mode:<14}{size:>9.0f}{r['before_mb']:>12.0f}{r['peak_mb']:>10.0f}"
                      f"{grown:>13.0f}{grown / size:>8.2f}{r['seconds']:>9.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
