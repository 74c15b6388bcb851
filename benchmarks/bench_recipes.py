"""Speed and memory of the single-device recipes next to a plain transformers + peft loop.

    .venv/bin/python benchmarks/bench_recipes.py            # the fixed workload (issue 9)
    .venv/bin/python benchmarks/bench_recipes.py --quick    # a tiny smoke run, ~1 minute

For full fine-tuning and LoRA it runs, alternately (ours, baseline, baseline, ours, ...):

- ours: ``tune run <recipe> --config <config>`` in a subprocess, the config being the
  shipped stories260K config with only the workload replaced (model sizes, data, batch,
  steps, lr); everything else (the loss, the optimizer's options, compile, activation
  checkpointing ...) stays at the config's defaults, and ``packed`` at the dataset
  builder's. Timings come from the recipe's DiskLogger records.
- baseline: ``transformers.LlamaForCausalLM`` (+ ``peft`` LoRA) with the same initial
  weights, fed the same batches (torchtune's dataset, sampler and collate), AdamW, in a
  plain loop in its own subprocess (``_bench_workers.py baseline``).

and prints non-padding tokens/s, model FLOP/s as a fraction of the measured fp32 matmul
peak, and peak RSS: medians over the repeats, and ours / baseline. See README.md for the
columns and the FLOP formula. This process imports no torch (see ``_bench_workers.py``).
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).resolve().parent / "_bench_workers.py"
RECIPES = {
    "full": ("full_finetune_single_device", "stories260K/full_single_device.yaml"),
    "lora": ("lora_finetune_single_device", "stories260K/lora_single_device.yaml"),
}
# Keys a recipe log may carry the step's non-padding token count under.
TOKEN_KEYS = ("num_tokens", "tokens")


def _default_data() -> Path:
    shared = REPO.parent / "shared" / "data" / "alpaca" / "alpaca_5000.json"
    return shared if shared.exists() else REPO / "tests" / "assets" / "alpaca_1000.json"


def parse_args(argv: Optional[list] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    w = p.add_argument_group("workload (defaults: the fixed workload of issue 9)")
    w.add_argument("--embed-dim", type=int, default=768)
    w.add_argument("--num-layers", type=int, default=12)
    w.add_argument("--num-heads", type=int, default=12)
    w.add_argument("--num-kv-heads", type=int, default=None, help="default: --num-heads")
    w.add_argument("--intermediate-dim", type=int, default=2048)
    w.add_argument("--vocab-size", type=int, default=32000)
    w.add_argument("--max-seq-len", type=int, default=512)
    w.add_argument("--batch-size", type=int, default=4)
    w.add_argument("--lr", type=float, default=3e-4)
    w.add_argument("--warmup-steps", type=int, default=3, help="steps run but not timed")
    w.add_argument("--steps", type=int, default=10, help="timed steps")
    w.add_argument("--lora-rank", type=int, default=8)
    w.add_argument("--lora-alpha", type=float, default=16)
    w.add_argument("--data", type=Path, default=_default_data(), help="alpaca-style json records")
    w.add_argument("--tokenizer", type=Path, default=REPO / "tests" / "assets" / "llama2_tokenizer.model")
    w.add_argument("--device", default="cpu")
    w.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    r = p.add_argument_group("run")
    r.add_argument("--quick", action="store_true",
                   help="tiny smoke setting: d=64, 2 layers, seq 128, batch 2, 1+3 steps, 1 repeat")
    r.add_argument("--recipes", default="full,lora", help="comma-separated subset of full,lora")
    r.add_argument("--repeats", type=int, default=3, help="runs of each trainer per recipe")
    r.add_argument("--matmul-size", type=int, default=4096, help="n of the n x n x n torch.mm")
    r.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `tune run` override for ours only (repeatable), e.g. compile=True")
    r.add_argument("--threads", type=int, default=None,
                   help="set OMP_NUM_THREADS / MKL_NUM_THREADS for every subprocess")
    r.add_argument("--timeout", type=int, default=3600, help="seconds per subprocess")
    r.add_argument("--workdir", type=Path, default=None, help="default: a temp dir, removed at the end")
    r.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.embed_dim, args.num_layers, args.num_heads = 64, 2, 4
        args.intermediate_dim, args.max_seq_len, args.batch_size = 172, 128, 2
        args.warmup_steps, args.steps, args.repeats, args.matmul_size = 1, 3, 1, 1024
    if args.num_kv_heads is None:
        args.num_kv_heads = args.num_heads
    args.recipes = [name.strip() for name in args.recipes.split(",") if name.strip()]
    unknown = sorted(set(args.recipes) - set(RECIPES))
    if unknown:
        p.error(f"--recipes: unknown {unknown}; choose from {sorted(RECIPES)}")
    return args


# ---------------------------------------------------------------------------- configs


def build_config(args: argparse.Namespace, kind: str, base_dir: Path, run_root: Path):
    """The shipped stories260K config with the workload swapped in; the rest stays default."""
    recipe, config_name = RECIPES[kind]
    cfg = OmegaConf.load(REPO / "recipes" / "configs" / config_name)
    model = {
        "_component_": "torchtune.models.llama2.llama2",
        "vocab_size": args.vocab_size, "num_layers": args.num_layers,
        "num_heads": args.num_heads, "num_kv_heads": args.num_kv_heads,
        "embed_dim": args.embed_dim, "max_seq_len": args.max_seq_len,
        "intermediate_dim": args.intermediate_dim, "norm_eps": 1e-5,
    }
    if kind == "lora":
        model = {
            **model,
            "_component_": "torchtune.models.llama2.lora_llama2",
            "lora_attn_modules": ["q_proj", "v_proj"], "apply_lora_to_mlp": False,
            "apply_lora_to_output": False, "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha, "lora_dropout": 0.0,
        }
        cfg.sample_prompt = None
    cfg.model = model
    cfg.output_dir = str(run_root / f"{kind}_ours")  # each run overrides it
    cfg.tokenizer.path = str(args.tokenizer.resolve())
    cfg.checkpointer.checkpoint_dir = str(base_dir)
    cfg.checkpointer.checkpoint_files = ["consolidated.00.pth"]
    # `packed` is left to the builder's default: what a user of alpaca_dataset gets.
    cfg.dataset = {
        "_component_": "torchtune.datasets.alpaca_dataset", "source": "json",
        "data_files": str(args.data.resolve()), "train_on_input": False,
        "max_seq_len": args.max_seq_len,
    }
    cfg.validation_dataset = None
    cfg.validate_every_n_steps = None
    cfg.batch_size = args.batch_size
    cfg.epochs = 1
    cfg.max_steps_per_epoch = args.warmup_steps + args.steps
    cfg.gradient_accumulation_steps = 1
    cfg.optimizer.lr = args.lr
    cfg.lr_scheduler = None  # constant lr, as in the plain loop
    cfg.device = args.device
    cfg.dtype = args.dtype
    cfg.save_every_n_steps = None
    cfg.resume_from_checkpoint = False
    cfg.metric_logger = {
        "_component_": "torchtune.training.metric_logging.DiskLogger",
        "log_dir": "${output_dir}/logs", "filename": "metrics.jsonl",
    }
    cfg.log_every_n_steps = 1
    cfg.log_peak_memory_stats = True
    return recipe, cfg


# ---------------------------------------------------------------------------- subprocesses


def _env(args: argparse.Namespace) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    return env


def _run(cmd: list, args: argparse.Namespace, what: str) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=REPO, env=_env(args), capture_output=True, text=True,
                         timeout=args.timeout)
    if out.returncode != 0:
        sys.exit(f"{what} failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}")
    return out


def run_worker(mode: str, spec: dict, args: argparse.Namespace, workdir: Path, tag: str) -> dict:
    spec = {**spec, "out": str(workdir / f"{tag}.out.json")}
    spec_path = workdir / f"{tag}.spec.json"
    spec_path.write_text(json.dumps(spec))
    _run([sys.executable, str(WORKERS), mode, str(spec_path)], args, f"worker {mode} ({tag})")
    return json.loads(Path(spec["out"]).read_text())


def _tune_command() -> list:
    tune = Path(sys.executable).parent / "tune"
    return [str(tune)] if tune.exists() else [sys.executable, "-m", "torchtune._cli.tune"]


def run_ours(recipe: str, config_path: Path, run_dir: Path, args, keep: bool) -> list:
    """`tune run` the recipe; returns its DiskLogger records of training steps."""
    cmd = [*_tune_command(), "run", recipe, "--config", str(config_path),
           f"output_dir={run_dir}", *args.override]
    _run(cmd, args, f"tune run {recipe}")
    log_path = run_dir / "logs" / "metrics.jsonl"
    with open(log_path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not keep:
        shutil.rmtree(run_dir, ignore_errors=True)  # ~0.5 GB of checkpoint per run
    return [r for r in records if "tokens_per_second" in r]


# ---------------------------------------------------------------------------- FLOPs


def matmul_params(args: argparse.Namespace) -> int:
    """Weights that multiply activations per token: attention and MLP projections of every
    layer plus the output projection (the embedding is a lookup, no FLOPs)."""
    d, h_d = args.embed_dim, args.embed_dim // args.num_heads
    q = o = d * args.num_heads * h_d
    k = v = d * args.num_kv_heads * h_d
    return args.num_layers * (q + k + v + o + 3 * d * args.intermediate_dim) + d * args.vocab_size


def model_flops(args: argparse.Namespace, kind: str, row_lengths: list) -> float:
    """Model FLOPs of training on rows with these non-padding lengths (padding counts 0).

    Per token at position p (1-based) of its row, with N = matmul_params, L layers,
    n_h * h_d = attention width, and attention causal (a token attends to p keys):
        attention, forward + backward:   12 * L * p * n_h * h_d  (QK^T and AV: 4*p*n_h*h_d
                                         forward, twice that backward)
        full fine-tune:                  6 * N  + attention      (forward 2N, backward 4N)
        LoRA:                            4 * N  + attention      (forward 2N, backward through
                                         activations 2N; frozen weights get no gradient)
                                         + 6 * r * (in + out) per adapted projection
    """
    h_d = args.embed_dim // args.num_heads
    width = args.num_heads * h_d
    n = matmul_params(args)
    per_token = 6 * n if kind == "full" else 4 * n
    if kind == "lora":
        q_out = args.num_heads * h_d
        v_out = args.num_kv_heads * h_d
        per_token += 6 * args.lora_rank * args.num_layers * ((args.embed_dim + q_out) + (args.embed_dim + v_out))
    total = 0.0
    for length in row_lengths:
        total += per_token * length + 12 * args.num_layers * width * length * (length + 1) / 2
    return total


# ---------------------------------------------------------------------------- summary


def _timed(records: list, args: argparse.Namespace) -> list:
    first, last = args.warmup_steps + 1, args.warmup_steps + args.steps
    timed = [r for r in records if first <= r["step"] <= last]
    if len(timed) != args.steps:
        sys.exit(f"expected records for steps {first}..{last}, got steps {[r['step'] for r in records]}")
    return timed


def summarize_ours(records: list, steps: list, args) -> dict:
    """tokens/s over the timed steps = their tokens / their time; a step's time is its
    token count over its logged tokens_per_second."""
    timed = _timed(records, args)
    step_tokens, step_seconds, source = [], [], "log"
    for r in timed:
        n = next((r[k] for k in TOKEN_KEYS if k in r), None)
        if n is None:  # the recipe does not log counts: take them from the shared batches
            n, source = sum(steps[r["step"] - 1]["row_lengths"]), "batches"
        step_tokens.append(n)
        step_seconds.append(n / r["tokens_per_second"])
    tokens, seconds = sum(step_tokens), sum(step_seconds)
    last = timed[-1]
    return {
        "tokens_per_second": tokens / seconds, "seconds": seconds, "tokens": tokens,
        "step_seconds": step_seconds, "token_count_source": source,
        "mean_step_tokens_per_second": statistics.mean(r["tokens_per_second"] for r in timed),
        "peak_memory_rss": last["peak_memory_rss"], "peak_memory_alloc": last.get("peak_memory_alloc"),
        "losses": [r["loss"] for r in records],
    }


def summarize_baseline(result: dict, args) -> dict:
    timed = _timed(result["records"], args)
    tokens, seconds = sum(r["num_tokens"] for r in timed), sum(r["seconds"] for r in timed)
    last = timed[-1]
    return {
        "tokens_per_second": tokens / seconds, "seconds": seconds, "tokens": tokens,
        "step_seconds": [r["seconds"] for r in timed],
        "peak_memory_rss": last["peak_memory_rss"], "peak_memory_alloc": last.get("peak_memory_alloc"),
        "losses": [r["loss"] for r in result["records"]],
    }


def check_same_batches(kind: str, runs: dict) -> None:
    """Equal step-1 losses show that ours and the baseline trained on the same batches from
    the same weights. When they differ (ours packs, say) and the recipe's log has no token
    counts, the baseline's batches cannot give ours' step times: fall back to the mean of
    the logged per-step tokens/s, close to exact when every step holds about as many
    tokens (as packed rows do)."""
    ours_loss, base_loss = runs["ours"][0]["losses"][0], runs["baseline"][0]["losses"][0]
    if abs(ours_loss - base_loss) <= 1e-3 * max(abs(base_loss), 1.0):
        return
    note = ""
    if runs["ours"][0]["token_count_source"] == "batches":
        for run in runs["ours"]:
            run["tokens_per_second"] = run["mean_step_tokens_per_second"]
            run["token_count_source"] = "mean of logged tokens_per_second"
        note = (" The recipe logs no per-step token count, so ours' tokens/s is the mean of its "
                "logged per-step tokens_per_second.")
    print(f"NOTE: {kind}: step-1 loss {ours_loss:.6f} (ours) != {base_loss:.6f} (baseline): "
          f"they did not see the same first batch or weights (packing?).{note}", file=sys.stderr)


def _median(runs: list, key: str) -> Optional[float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: Optional[list] = None) -> dict:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_recipes_"))
    workdir.mkdir(parents=True, exist_ok=True)
    keep = args.workdir is not None
    base_dir, hf_dir, run_root = workdir / "base_meta", workdir / "base_hf", workdir / "runs"
    started = time.time()
    try:
        configs = {}
        for kind in args.recipes:
            recipe, cfg = build_config(args, kind, base_dir, run_root)
            path = workdir / f"{kind}.yaml"
            OmegaConf.save(cfg, path)
            configs[kind] = (recipe, path)
        _, full_cfg = build_config(args, "full", base_dir, run_root)
        OmegaConf.save(full_cfg, workdir / "prepare.yaml")
        total_steps = args.warmup_steps + args.steps

        print(f"preparing the model and batches in {workdir} ...", flush=True)
        prep = run_worker("prepare", {
            "config": str(workdir / "prepare.yaml"), "base_dir": str(base_dir),
            "hf_dir": str(hf_dir), "init_seed": 0, "total_steps": total_steps,
        }, args, workdir, "prepare")
        if prep["tokenizer_vocab_size"] > prep["vocab_size"]:
            sys.exit(f"--vocab-size {args.vocab_size} < the tokenizer's {prep['tokenizer_vocab_size']}")
        matmul_spec = {"n": args.matmul_size, "reps": 5, "device": args.device, "dtype": args.dtype}
        peaks = [run_worker("matmul", matmul_spec, args, workdir, "matmul_start")["flops"]]

        timed_rows = [n for s in prep["steps"][args.warmup_steps:] for n in s["row_lengths"]]
        timed_tokens = sum(timed_rows)
        timed_positions = sum(len(s["row_lengths"]) * s["padded_len"] for s in prep["steps"][args.warmup_steps:])

        runs = {kind: {"ours": [], "baseline": []} for kind in args.recipes}
        for rep in range(args.repeats):
            order = ("ours", "baseline") if rep % 2 == 0 else ("baseline", "ours")  # ABBA
            for kind in args.recipes:
                recipe, config_path = configs[kind]
                for impl in order:
                    t0 = time.time()
                    if impl == "ours":
                        run_dir = run_root / f"{kind}_ours_{rep}"
                        summary = summarize_ours(
                            run_ours(recipe, config_path, run_dir, args, keep), prep["steps"], args
                        )
                    else:
                        result = run_worker("baseline", {
                            "config": str(config_path), "hf_dir": str(hf_dir),
                            "lora": kind == "lora", "total_steps": total_steps,
                            "device": args.device, "dtype": args.dtype,
                        }, args, workdir, f"{kind}_baseline_{rep}")
                        summary = summarize_baseline(result, args)
                    summary["wall_seconds"] = time.time() - t0
                    runs[kind][impl].append(summary)
                    print(f"  {kind:4s} {impl:8s} run {rep + 1}/{args.repeats}: "
                          f"{summary['tokens_per_second']:8.1f} tok/s, "
                          f"peak RSS {summary['peak_memory_rss']:.2f} GiB, "
                          f"loss {summary['losses'][0]:.4f} -> {summary['losses'][-1]:.4f} "
                          f"({summary['wall_seconds']:.0f} s)", flush=True)
        peaks.append(run_worker("matmul", matmul_spec, args, workdir, "matmul_end")["flops"])
        peak = max(peaks)

        results = {}
        for kind in args.recipes:
            check_same_batches(kind, runs[kind])
            flops_per_token = model_flops(args, kind, timed_rows) / timed_tokens
            row = {}
            for impl in ("ours", "baseline"):
                tps = _median(runs[kind][impl], "tokens_per_second")
                row[impl] = {
                    "tokens_per_second": tps,
                    "mfu": tps * flops_per_token / peak,
                    "peak_memory_rss_gib": _median(runs[kind][impl], "peak_memory_rss"),
                    "peak_memory_alloc_gib": _median(runs[kind][impl], "peak_memory_alloc"),
                    "first_loss": runs[kind][impl][0]["losses"][0],
                    "runs": runs[kind][impl],
                }
            row["ratio"] = {
                "tokens_per_second": row["ours"]["tokens_per_second"] / row["baseline"]["tokens_per_second"],
                "peak_memory_rss": row["ours"]["peak_memory_rss_gib"] / row["baseline"]["peak_memory_rss_gib"],
            }
            row["model_flops_per_token"] = flops_per_token
            results[kind] = row

        report = {
            "workload": {
                **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("json", "workdir", "timeout")},
                "num_params": prep["num_params"], "matmul_params": matmul_params(args),
                "dataset_len": prep["dataset_len"],
                "timed_non_padding_tokens": timed_tokens, "timed_positions": timed_positions,
            },
            "machine": {
                "matmul_flops_peak": peak, "matmul_flops_start_end": peaks,
                "cpu_count": os.cpu_count(), "platform": platform.platform(),
                "python": platform.python_version(),
                # A child's ru_maxrss starts at its parent's peak: the floor of every RSS figure.
                "driver_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
            },
            "results": results,
            "wall_seconds": time.time() - started,
        }
        print_table(report, args)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(f"wrote {args.json}")
        return report
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def print_table(report: dict, args: argparse.Namespace) -> None:
    w, m = report["workload"], report["machine"]
    pad = 1 - w["timed_non_padding_tokens"] / w["timed_positions"]
    print()
    print(f"workload: Llama-2 d={args.embed_dim} L={args.num_layers} heads={args.num_heads}/"
          f"{args.num_kv_heads} ffn={args.intermediate_dim} vocab={args.vocab_size} "
          f"({w['num_params'] / 1e6:.1f}M params, {w['matmul_params'] / 1e6:.1f}M in matmuls), "
          f"{args.dtype} on {args.device}")
    print(f"          {Path(args.data).name} (train_on_input=False), max_seq_len {args.max_seq_len}, "
          f"batch {args.batch_size}, lr {args.lr:g}, {args.warmup_steps} warm-up + {args.steps} "
          f"timed steps, {args.repeats} run(s) each, alternating")
    print(f"timed batches: {w['timed_non_padding_tokens']:,} non-padding tokens in "
          f"{w['timed_positions']:,} positions ({pad:.0%} padding, as the baseline sees them)")
    print(f"matmul peak: {m['matmul_flops_peak'] / 1e9:.1f} GFLOP/s ({args.dtype} torch.mm "
          f"{args.matmul_size}^3, best of 5; start {m['matmul_flops_start_end'][0] / 1e9:.1f}, "
          f"end {m['matmul_flops_start_end'][1] / 1e9:.1f})")
    if args.override:
        print(f"ours with overrides: {' '.join(args.override)}")
    print()
    gpu = args.device.startswith("cuda")
    header = f"{'recipe':6s} {'trainer':9s} {'tokens/s':>9s} {'MFU':>6s} {'peak RSS':>9s}"
    header += f" {'peak GPU':>9s}" if gpu else ""
    header += f" {'loss@1':>8s}"
    print(header)
    print("-" * len(header))
    for kind, row in report["results"].items():
        for impl, label in (("ours", "torchtune"), ("baseline", "hf+peft" if kind == "lora" else "hf")):
            r = row[impl]
            line = (f"{kind:6s} {label:9s} {r['tokens_per_second']:9.1f} {r['mfu']:6.1%} "
                    f"{r['peak_memory_rss_gib']:7.2f}Gi")
            if gpu:
                alloc = r["peak_memory_alloc_gib"]
                line += f" {alloc:7.2f}Gi" if alloc is not None else f" {'-':>9s}"
            line += f" {r['first_loss']:8.4f}"
            print(line)
        ratio = row["ratio"]
        print(f"{kind:6s} {'ratio':9s} {ratio['tokens_per_second']:8.2f}x {'':6s} "
              f"{ratio['peak_memory_rss']:8.2f}x")
        print(f"{'':6s} model FLOPs per non-padding token: {row['model_flops_per_token'] / 1e9:.3f} GFLOP")
    print()
    print(f"(a child's ru_maxrss starts at its parent's peak, this driver's "
          f"{m['driver_peak_rss_gib'] * 1024:.0f} MiB: figures above that are the child's own)")
    print("tokens/s: non-padding (prompt + response) tokens per second over the timed steps, "
          "median of the runs; MFU: tokens/s x model FLOPs per token / matmul peak; "
          "peak RSS: process peak resident set at the last timed step; ratio: ours / baseline.")


if __name__ == "__main__":
    main()
