"""A tiny mixture-of-experts decoder next to a dense one with the same active parameters.

Both are Qwen 3-style decoders (``torchtune.models.qwen3_moe.qwen3_moe`` and
``torchtune.models.qwen3.qwen3``): 4 layers, d 256, 8 heads of 32. The dense MLP is
SwiGLU 1024; the MoE has 8 experts of width 512, 2 per token, so each token runs the same
MLP parameters (2 x 512 = 1024) while the layer holds 4x as many. Each runs forward and
backward (cross-entropy plus the load-balancing loss for the MoE) on batch 4 x 512 tokens,
fp32, in a fresh subprocess per model and kernel: tokens/s over 5 timed steps after 2
warm-up steps, and the peak resident memory above the model at rest (``ru_maxrss``).

    .venv/bin/python benchmarks/bench_moe.py
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(kind: str) -> dict:
    import torch

    from torchtune.models.qwen3 import qwen3
    from torchtune.models.qwen3_moe import qwen3_moe
    from torchtune.modules.moe import load_balancing_loss, MoE, moe_router_stats

    torch.manual_seed(0)
    sizes = dict(vocab_size=4096, num_layers=4, num_heads=8, num_kv_heads=8, embed_dim=256,
                 max_seq_len=512, head_dim=32)
    if kind == "dense":
        model = qwen3(**sizes, intermediate_dim=1024)
    else:
        model = qwen3_moe(**sizes, intermediate_dim=1024, moe_intermediate_dim=512, num_experts=8,
                          experts_per_token=2)
        for m in model.modules():
            if isinstance(m, MoE):
                m.kernel = kind.split("-")[1]
    params = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, 4096, (4, 512))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        aux = load_balancing_loss(moe_router_stats(model))
        (loss if aux is None else loss + 0.001 * aux).backward()
        model.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(5):
        step()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"params": params, "tokens_per_s": 5 * tokens.numel() / elapsed, "mb": (peak - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    print("| model | parameters | tokens/s | MB above rest |")
    print("| --- | ---: | ---: | ---: |")
    for kind in ("dense", "moe-grouped", "moe-loop"):
        out = subprocess.run([sys.executable, __file__, "--one", kind], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {kind} | {r['params']:,} | {r['tokens_per_s']:.0f} | {r['mb']:.0f} |")


if __name__ == "__main__":
    main()
