"""Attention memory of a Gemma 3-style model as the sequence grows past its window.

A tiny Gemma 3-style decoder (``torchtune.models.gemma3.gemma3``: five sliding-window layers
to each global one, window ``--window``) runs one forward and backward at sequence lengths
``window x {1, 2, 4, 8}``, each in a fresh subprocess, with two attention paths for the
sliding layers:

- ``windowed``: what the model does (``attend``: ``banded_attention`` on CPU, a block of
  queries against only the keys its window reaches; FlexAttention with a block mask on
  CUDA), O(S x w);
- ``dense``: the sliding layers' scores materialised for every query and key of the row
  and masked to the window (``eager_attention`` with an S x S mask), O(S^2): what an
  attention that masks instead of skipping costs (transformers' eager path, any kernel
  without a window argument).

The global layers use SDPA in both (O(S) memory on CPU and CUDA). Memory is the peak above
the model's resting state: ``torch.cuda.max_memory_allocated`` on CUDA, else the peak
resident set size (``ru_maxrss``) of the subprocess minus its size before the step.
Linear growth shows as the memory per token staying flat.

    .venv/bin/python benchmarks/bench_sliding_window_memory.py [--window 256] [--device cpu]
"""

import argparse
import json
import resource
import subprocess
import sys


def measure(seq_len: int, window: int, kernel: str, device: str) -> float:
    """MB above resting of one forward + backward at ``seq_len`` (run in this process)."""
    import torch

    from torchtune.models.gemma3 import gemma3
    from torchtune.modules import _attention_kernels

    if kernel == "dense":
        def dense(q, k, v, *, mask=None, q_idx=None, scale=None, softcap=None, window=None, **_):
            s = q.shape[2]
            i = torch.arange(s, device=q.device)
            allowed = (i[None] <= i[:, None]) & (i[None] > i[:, None] - window)  # [s, s]
            return _attention_kernels.eager_attention(q, k, v, mask=allowed, scale=scale, softcap=softcap)

        _attention_kernels.banded_attention = dense
    torch.manual_seed(0)
    with torch.device(device):
        model = gemma3(
            vocab_size=1024, num_layers=6, num_heads=8, head_dim=32, num_kv_heads=2,
            embed_dim=128, intermediate_dim=256, max_seq_len=seq_len,
            sliding_window_size=window, query_pre_attn_scalar=32,
        )
    tokens = torch.randint(0, 1024, (1, seq_len), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model(tokens).float().logsumexp(-1).mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("SEQ_LEN", "KERNEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(int(args.one[0]), args.window, args.one[1], args.device)))
        return
    print(f"Gemma 3-style model (6 layers, 5 sliding, window {args.window}), one forward + backward, "
          f"device {args.device}; MB above resting (MB per 1k tokens)")
    print(f"| sequence | x window | windowed MB | per 1k tok | dense MB | per 1k tok |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for factor in (1, 2, 4, 8):
        seq = args.window * factor
        row = []
        for kernel in ("windowed", "dense"):
            out = subprocess.run(
                [sys.executable, __file__, "--window", str(args.window), "--device", args.device,
                 "--one", str(seq), kernel],
                capture_output=True, text=True, check=True,
            )
            mb = json.loads(out.stdout.strip().splitlines()[-1])
            row += [f"{mb:.0f}", f"{mb / seq * 1000:.1f}"]
        print(f"| {seq} | {factor} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
