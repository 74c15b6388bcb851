"""How a training step's cost grows with the tokens in a batch.

    .venv/bin/python benchmarks/bench_scaling.py            # both models, every size
    .venv/bin/python benchmarks/bench_scaling.py --quick    # the tiny model, a few sizes
    .venv/bin/python benchmarks/bench_scaling.py --src /tmp/old   # another checkout's torchtune

For each model and each batch shape it runs, in a fresh subprocess, the recipes' default
step without the optimizer: padding-free (alpaca, ``padding_free_collate``) or packed
(text completion, ``packed=True``) batches, the model with the output projection inside
``LinearCrossEntropyLoss``, forward and backward. It prints microseconds per token (the
non-padding tokens the recipes count for tokens/s) and the peak RSS of the timed steps
(Linux ``VmHWM``, reset after the warm-up step), next to the RSS before them.

Models (random init, Llama 2 architecture, vocab 32,000, the real Llama 2 tokenizer):

- ``tiny``: embed 128, 2 layers, 4 heads, SwiGLU 384;
- ``bench``: embed 768, 4 layers, 12 heads, SwiGLU 2048 (bench_recipes.py's model, 4 layers).

Shapes: padding-free batches of 4 to 128 alpaca samples (``max_seq_len`` 512), and packed
rows of 512 to 8,192 tokens (1 row per batch; 8 on CUDA, so 8 x 4,096 is among them) from
the bundled Shakespeare text. On CUDA (``--device cuda``, bf16 by default) it also reports
tokens/s and peak GPU memory.

Targets (issue 15, 2 CPU cores): us/token at batch 128 within 1.15x of batch 16; peak RSS
growing in proportion to the tokens, with no term in S squared.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "assets" / "llama2_tokenizer.model"
TEXT = REPO / "torchtune" / "assets" / "tinyshakespeare.txt"
MODELS = {
    "tiny": dict(embed_dim=128, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_dim=384),
    "bench": dict(embed_dim=768, num_layers=4, num_heads=12, num_kv_heads=12, intermediate_dim=2048),
}
BATCHES = [4, 8, 16, 32, 64, 128]
PACKED = [512, 1024, 2048, 4096, 8192]


def _alpaca() -> Path:
    shared = REPO.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"
    return shared if shared.exists() else REPO / "tests" / "assets" / "alpaca_1000.json"


def _vm_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def worker(model_name: str, kind: str, size: int, steps: int, device: str, dtype: str, cache: str) -> dict:
    """One measurement, in this process: ``kind`` is "free" (size = samples per batch) or
    "packed" (size = row length; 1 row per batch on CPU, 8 on CUDA)."""
    import torch

    from torchtune.training import set_default_dtype

    from torchtune.data import padded_collate, padding_free_collate
    from torchtune.datasets import alpaca_dataset, text_completion_dataset
    from torchtune.models.llama2 import llama2, llama2_tokenizer
    from torchtune.modules.loss import LinearCrossEntropyLoss

    torch.manual_seed(0)
    tok = llama2_tokenizer(str(TOKENIZER))
    if kind == "free":
        data = alpaca_dataset(tok, source="json", data_files=str(_alpaca()), max_seq_len=512,
                              train_on_input=False, cache_dir=cache)
        collate, per_batch = padding_free_collate, size
    else:
        data = text_completion_dataset(tok, source="text", data_files=str(TEXT), sample_by="paragraph",
                                       max_seq_len=size, packed=True, cache_dir=cache)
        collate, per_batch = padded_collate, 8 if device == "cuda" else 1
    order = torch.randperm(len(data)).tolist()
    batches = [collate([data[i] for i in order[j * per_batch : (j + 1) * per_batch]])
               for j in range(steps + 1)]
    with torch.device(device), set_default_dtype({"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]):
        model = llama2(vocab_size=32000, max_seq_len=max(size, 512),
                       norm_eps=1e-5, **MODELS[model_name])
    loss_fn = LinearCrossEntropyLoss()
    loss_fn.set_model_output(model)

    def step(batch) -> int:
        batch = {k: v.to(device) for k, v in batch.items()}
        # Whichever keys the collate gives: this runs against older checkouts too.
        extra = {k: batch[k] for k in ("mask", "input_pos", "seq_lens") if k in batch}
        loss_sum, n = loss_fn(model(batch["tokens"], **extra), batch["labels"])
        (loss_sum / n.clamp(min=1)).backward()
        model.zero_grad(set_to_none=True)
        return int((batch["tokens"] != tok.pad_id).sum())

    step(batches[0])  # warm-up: first-call allocations and kernel choices
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _vm_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on
    start = time.perf_counter()
    tokens = 0
    for batch in batches[1:]:
        tokens += step(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out = {
        "model": model_name, "kind": kind, "size": size, "tokens_per_step": tokens / steps,
        "us_per_token": elapsed / tokens * 1e6, "tokens_per_second": tokens / elapsed,
        "rss_before_mib": rss_before / 1024, "peak_rss_mib": _vm_kib("VmHWM") / 1024,
    }
    if device == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def measure(args, model_name: str, kind: str, size: int) -> Optional[dict]:
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([str(args.src), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, __file__, "--worker", model_name, kind, str(size),
           "--steps", str(args.steps), "--device", args.device, "--dtype", args.dtype,
           "--cache", str(args.cache)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=args.src or REPO)
    if proc.returncode != 0:
        print(f"  {model_name} {kind} {size}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny,bench", help="comma-separated subset of tiny,bench")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)))
    p.add_argument("--packed", default=",".join(map(str, PACKED)))
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16"],
                   help="default: fp32 on CPU, bf16 (what the CUDA configs train in) on CUDA")
    p.add_argument("--src", type=Path, default=None, help="import torchtune from this checkout")
    p.add_argument("--cache", type=Path, default=Path("/tmp/torchtune_bench_scaling_cache"))
    p.add_argument("--quick", action="store_true", help="tiny model, batches 4,16 and packed 512")
    p.add_argument("--json", type=Path, default=None, help="also write every figure here")
    p.add_argument("--worker", nargs=3, metavar=("MODEL", "KIND", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.worker:
        model_name, kind, size = args.worker
        result = worker(model_name, kind, int(size), args.steps, args.device, args.dtype, str(args.cache))
        print(json.dumps(result))
        return 0
    if args.quick:
        args.models, args.batches, args.packed = "tiny", "4,16", "512"
    runs = [("free", int(b)) for b in args.batches.split(",") if b]
    runs += [("packed", int(n)) for n in args.packed.split(",") if n]
    print(f"torchtune from {args.src or REPO}, {args.device} {args.dtype}, {args.steps} timed steps")
    print(f"{'model':6} {'batch':>12} {'tokens/step':>11} {'us/token':>9} {'rss before':>11} "
          f"{'peak rss':>9}" + (f" {'peak gpu':>9} {'tok/s':>8}" if args.device == "cuda" else ""))
    results = []
    for model_name in args.models.split(","):
        for kind, size in runs:
            r = measure(args, model_name, kind, size)
            if r is None:
                continue
            results.append(r)
            shape = f"{size} samples" if kind == "free" else f"packed {size}"
            line = (f"{model_name:6} {shape:>12} {r['tokens_per_step']:11.0f} {r['us_per_token']:9.1f} "
                    f"{r['rss_before_mib']:8.0f} MiB {r['peak_rss_mib']:5.0f} MiB")
            if args.device == "cuda":
                line += f" {r['peak_gpu_mib']:5.0f} MiB {r['tokens_per_second']:8.0f}"
            print(line, flush=True)
    for model_name in args.models.split(","):
        free = {r["size"]: r for r in results if r["model"] == model_name and r["kind"] == "free"}
        if 16 in free and 128 in free:
            ratio = free[128]["us_per_token"] / free[16]["us_per_token"]
            growth = free[128]["peak_rss_mib"] - free[16]["peak_rss_mib"]
            extra = free[128]["tokens_per_step"] - free[16]["tokens_per_step"]
            print(f"{model_name}: us/token at batch 128 / batch 16 = {ratio:.2f} (target <= 1.15); "
                  f"peak RSS +{growth:.0f} MiB for {extra:.0f} more tokens "
                  f"({growth * 1024 / max(extra, 1):.1f} KiB per token)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
