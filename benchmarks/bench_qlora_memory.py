"""QLoRA's memory next to LoRA's on the workload of bench_recipes.py (a measurement, not a test).

    .venv/bin/python benchmarks/bench_qlora_memory.py                 # fp32, the fixed workload
    .venv/bin/python benchmarks/bench_qlora_memory.py --dtype bf16    # bf16 compute
    .venv/bin/python benchmarks/bench_qlora_memory.py --quick         # smoke run (d=128)

Runs ``tune run lora_finetune_single_device`` twice per repeat, alternating (LoRA, QLoRA,
QLoRA, LoRA, ...), with the config bench_recipes.py builds for LoRA (rank 8 on q_proj and
v_proj) and, for QLoRA, ``model.quantize_base=True``: every linear of the decoder layers in
NF4, the embedding, output projection, norms and adapters in the compute dtype. It prints
each run's peak RSS (the recipe's log) and tokens/s, and, measured in a subprocess that
builds both models and loads the checkpoint into them as the recipe does, the model's
resident bytes (parameters and buffers; an NF4 weight counts its codes, scalers and factors)
and the frozen weights' bytes against the same weights in fp32. The workload flags are
bench_recipes.py's. This process imports no torch (a child's ``ru_maxrss`` starts at its
parent's peak).
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_recipes as br  # noqa: E402  (the workload, its config and its runner)

_MIB = 1024**2


def model_bytes(spec: dict) -> dict:
    """(In a subprocess.) Resident bytes of the model a config builds, with its checkpoint
    loaded as the recipe loads it: total, frozen, and the frozen weights' fp32 size."""
    import torch

    from torchtune import config, training
    from torchtune.models.llama2._convert_weights import meta_to_tune
    from torchtune.modules.low_precision import is_nf4
    from torchtune.modules.peft import get_adapter_params

    cfg = OmegaConf.load(spec["config"])
    dtype = training.get_dtype(cfg.dtype)
    with training.set_default_dtype(dtype):
        model = config.instantiate(cfg.model)
    sd = meta_to_tune(torch.load(Path(spec["base_dir"]) / "consolidated.00.pth", weights_only=True))
    model.load_state_dict(sd, strict=False)

    def nbytes(t: torch.Tensor) -> int:
        if is_nf4(t):  # codes (4 bit, two per byte), block scalers, their factors, the mean
            inner = ("quantized_data", "quantized_scalers", "quantization_factor", "scaler_mean", "nf4")
            return sum(getattr(t, name).nbytes for name in inner)
        return t.numel() * t.element_size()

    adapters = set(get_adapter_params(model))
    params = dict(model.named_parameters())
    frozen = {n: p for n, p in params.items() if n not in adapters}
    return {
        "total": sum(nbytes(p) for p in params.values()) + sum(nbytes(b) for b in model.buffers()),
        "frozen": sum(nbytes(p) for p in frozen.values()),
        "frozen_fp32": sum(p.numel() * 4 for p in frozen.values()),
        "nf4": sum(nbytes(p) for p in frozen.values() if is_nf4(p)),
        "nf4_params": sum(p.numel() for p in frozen.values() if is_nf4(p)),
        "frozen_params": sum(p.numel() for p in frozen.values()),
    }


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    quick = "--quick" in argv
    if quick:
        argv.remove("--quick")
    args = br.parse_args(argv + ["--recipes", "lora"])
    if quick:  # NF4 needs in x out a multiple of 16384: d=128 is the smallest square
        args.embed_dim, args.num_layers, args.num_heads, args.num_kv_heads = 128, 2, 4, 4
        args.intermediate_dim, args.max_seq_len, args.batch_size = 256, 128, 2
        args.warmup_steps, args.steps, args.repeats = 1, 3, 1
    return args


def main(argv: Optional[list] = None) -> dict:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_qlora_"))
    workdir.mkdir(parents=True, exist_ok=True)
    base_dir, run_root = workdir / "base_meta", workdir / "runs"
    try:
        configs = {}
        for kind in ("lora", "qlora"):
            recipe, cfg = br.build_config(args, "lora", base_dir, run_root)
            cfg.model.quantize_base = kind == "qlora"
            OmegaConf.save(cfg, workdir / f"{kind}.yaml")
            configs[kind] = (recipe, workdir / f"{kind}.yaml")
        _, full_cfg = br.build_config(args, "full", base_dir, run_root)
        OmegaConf.save(full_cfg, workdir / "prepare.yaml")
        print(f"preparing the model in {workdir} ...", flush=True)
        prep = br.run_worker("prepare", {
            "config": str(workdir / "prepare.yaml"), "base_dir": str(base_dir),
            "hf_dir": str(workdir / "base_hf"), "init_seed": 0,
            "total_steps": args.warmup_steps + args.steps,
        }, args, workdir, "prepare")

        sizes = {}
        for kind, (_, path) in configs.items():
            spec_path = workdir / f"{kind}_size.json"
            spec_path.write_text(json.dumps({"config": str(path), "base_dir": str(base_dir)}))
            out = br._run([sys.executable, __file__, "--model-bytes", str(spec_path)], args, f"size {kind}")
            sizes[kind] = json.loads(out.stdout.strip().splitlines()[-1])

        runs = {"lora": [], "qlora": []}
        for rep in range(args.repeats):
            for kind in ("lora", "qlora") if rep % 2 == 0 else ("qlora", "lora"):
                recipe, path = configs[kind]
                t0 = time.time()
                summary = br.summarize_ours(
                    br.run_ours(recipe, path, run_root / f"{kind}_{rep}", args, keep=False), prep["steps"], args
                )
                runs[kind].append(summary)
                print(f"  {kind:5s} run {rep + 1}/{args.repeats}: {summary['tokens_per_second']:8.1f} tok/s, "
                      f"peak RSS {summary['peak_memory_rss']:.3f} GiB, loss {summary['losses'][0]:.4f} -> "
                      f"{summary['losses'][-1]:.4f} ({time.time() - t0:.0f} s)", flush=True)
        report = {
            kind: {
                "tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs[kind]),
                "peak_rss_gib": statistics.median(r["peak_memory_rss"] for r in runs[kind]),
                "step1_loss": runs[kind][0]["losses"][0],
                **sizes[kind],
            }
            for kind in runs
        }
        print_table(report, args, prep["num_params"])
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return report
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def print_table(report: dict, args: argparse.Namespace, num_params: int) -> None:
    lora, qlora = report["lora"], report["qlora"]
    print(f"\nworkload: d={args.embed_dim}, {args.num_layers} layers, SwiGLU {args.intermediate_dim}, "
          f"vocab {args.vocab_size} ({num_params / 1e6:.1f}M parameters), {args.dtype}, batch "
          f"{args.batch_size} x seq <= {args.max_seq_len}, {args.steps} timed steps, median of {args.repeats}")
    print(f"NF4: {qlora['nf4_params'] / 1e6:.1f}M of the {qlora['frozen_params'] / 1e6:.1f}M frozen parameters\n")
    rows = [
        ("peak RSS (GiB)", lambda r: f"{r['peak_rss_gib']:.3f}"),
        ("model resident (MiB)", lambda r: f"{r['total'] / _MIB:.1f}"),
        ("frozen weights (MiB)", lambda r: f"{r['frozen'] / _MIB:.1f}"),
        ("frozen / their fp32 size", lambda r: f"{r['frozen'] / r['frozen_fp32']:.3f}"),
        ("NF4 weights / their fp32 size",
         lambda r: f"{r['nf4'] / (4 * r['nf4_params']):.3f}" if r["nf4_params"] else "-"),
        ("tokens/s", lambda r: f"{r['tokens_per_second']:.1f}"),
        ("step-1 loss", lambda r: f"{r['step1_loss']:.4f}"),
    ]
    print("| | LoRA | QLoRA | QLoRA / LoRA |\n| --- | ---: | ---: | ---: |")
    for name, fmt in rows:
        ratio = ""
        if name in ("peak RSS (GiB)", "model resident (MiB)", "frozen weights (MiB)", "tokens/s"):
            key = {"peak RSS (GiB)": "peak_rss_gib", "model resident (MiB)": "total",
                   "frozen weights (MiB)": "frozen", "tokens/s": "tokens_per_second"}[name]
            ratio = f"{qlora[key] / lora[key]:.2f}"
        print(f"| {name} | {fmt(lora)} | {fmt(qlora)} | {ratio} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--model-bytes":
        print(json.dumps(model_bytes(json.loads(Path(sys.argv[2]).read_text()))))
    else:
        main()
