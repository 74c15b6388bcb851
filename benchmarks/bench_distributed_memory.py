"""Per-rank memory of ``full_finetune_distributed``: 1 process against 2, on one model.

    .venv/bin/python benchmarks/bench_distributed_memory.py           # ~70M parameters
    .venv/bin/python benchmarks/bench_distributed_memory.py --quick   # ~10M, a smoke run

The model is a random-init Llama 2 (fp32, written in Meta format to a temporary folder) far
bigger than stories260K, so that its weights, gradients and AdamW state dominate each
process's memory. Both runs use the same per-rank batch, so activations are equal and only
the sharded state differs. It prints, per rank:

- the bytes of the rank's parameter shards and of its AdamW state, from a separate launch
  that shards the same model with ``training.shard_model`` and takes one optimizer step
  (``--shard-report``, run under torchrun);
- the training peak RSS of the real recipe run (``tune run --standalone --nproc_per_node N``):
  the kernel's peak counter (VmHWM) of each worker is reset through
  ``/proc/PID/clear_refs`` once step 1 is logged and read once step ``steps - 1`` is logged,
  so it covers whole training steps (weights, gradients, optimizer state, activations) and
  neither start-up nor the final checkpoint gather;
- the whole-run peak RSS (last VmHWM read, so start-up and rank 0's checkpoint writing
  included), and the RSS of a process that has only imported torch and torchtune.

The recipe runs with ``MALLOC_MMAP_THRESHOLD_=131072`` (``--default-malloc`` to leave glibc
alone): by default glibc raises its mmap threshold up to 32 MiB as large blocks are freed, and
then keeps freed tensors of up to that size (here: the full tensors broadcast while loading
the checkpoint) in its heap, where they count as RSS for the rest of the run whether or not
a rank shards anything. A fixed threshold returns them, so the RSS shows live memory.

Linux only (``/proc``). The driver imports neither torch nor torchtune.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "recipes" / "configs" / "stories260K" / "full_distributed.yaml"
SIZES = {
    "full": dict(vocab_size=8192, num_layers=8, num_heads=12, num_kv_heads=12, embed_dim=768, intermediate_dim=2048),
    "quick": dict(vocab_size=2048, num_layers=4, num_heads=8, num_kv_heads=8, embed_dim=384, intermediate_dim=1024),
}
_MIB = 1024**2


# ---------------------------------------------------------------- workers (import torch)


def prepare(folder: Path, sizes: dict) -> None:
    """Write the random-init model in Meta format, and the run's config, into ``folder``."""
    import torch
    from omegaconf import OmegaConf

    from torchtune import config
    from torchtune.models.llama2._convert_weights import tune_to_meta

    cfg = OmegaConf.load(CONFIG)
    cfg.model.update(sizes)
    torch.manual_seed(0)
    model = config.instantiate(cfg.model)
    torch.save(tune_to_meta(model.state_dict()), folder / "consolidated.00.pth")
    params = {
        "dim": sizes["embed_dim"], "n_layers": sizes["num_layers"], "n_heads": sizes["num_heads"],
        "n_kv_heads": sizes["num_kv_heads"], "vocab_size": sizes["vocab_size"], "norm_eps": 1e-5,
    }
    (folder / "params.json").write_text(json.dumps(params))
    shutil.copy(REPO / cfg.tokenizer.path, folder / "tokenizer.model")
    cfg.checkpointer.checkpoint_dir = str(folder)
    cfg.tokenizer.path = str(folder / "tokenizer.model")
    cfg.dataset.data_files = str(REPO / cfg.dataset.data_files)
    OmegaConf.save(cfg, folder / "config.yaml")
    print(json.dumps({"num_params": sum(p.numel() for p in model.parameters())}))


def shard_report(config_path: str) -> None:
    """Under torchrun: shard the model as the recipe does, take one AdamW step, and print
    every rank's bytes of parameter shards and optimizer state (rank 0 prints)."""
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf

    from torchtune import config, training

    cfg = OmegaConf.load(config_path)
    device = training.init_distributed("cpu")
    with torch.device("meta"):
        model = config.instantiate(cfg.model)
    training.shard_model(model, device)
    model.to_empty(device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()

    def local_bytes(tensors) -> int:
        return sum(t.to_local().nbytes if hasattr(t, "to_local") else t.nbytes for t in tensors)

    mine = {
        "param_bytes": local_bytes(model.parameters()),
        "optimizer_bytes": local_bytes(v for s in optimizer.state.values() for v in s.values()),
    }
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if dist.get_rank() == 0:
        print("SHARDS " + json.dumps(everyone))
    dist.destroy_process_group()


# ---------------------------------------------------------------- driver (no torch)


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _workers(parent_pid: int) -> dict:
    """{rank: pid} of the torchrun workers below ``parent_pid``."""
    found = {}
    for line in subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent_pid)], capture_output=True, text=True).stdout.split():
        pid = int(line)
        try:
            env = dict(
                kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv
            )
        except OSError:
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = pid
        found.update(_workers(pid))
    return found


def _logged_steps(log_file: Path) -> set:
    if not log_file.exists():
        return set()
    steps = set()
    for line in log_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if "loss" in record:
            steps.add(record["step"])
    return steps


def run_recipe(nproc: int, folder: Path, steps: int, batch_size: int, seq_len: int, env: dict) -> dict:
    out_dir = folder / f"run_{nproc}"
    cmd = [
        sys.executable, "-m", "torchtune._cli.tune", "run", "--standalone", "--nproc_per_node", str(nproc),
        "full_finetune_distributed", "--config", str(folder / "config.yaml"),
        f"output_dir={out_dir}", f"max_steps_per_epoch={steps}", f"batch_size={batch_size}",
        f"dataset.max_seq_len={seq_len}", "log_every_n_steps=1", "metric_logger.filename=log.jsonl",
        "lr_scheduler.num_warmup_steps=1",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log_file = out_dir / "logs" / "log.jsonl"
    pids, reset, training_peak, whole_peak = {}, False, {}, {}
    while proc.poll() is None:
        if len(pids) < nproc:
            pids = _workers(proc.pid)
        for rank, pid in pids.items():
            try:
                whole_peak[rank] = _status_kib(pid, "VmHWM")
            except (OSError, StopIteration):
                pass
        logged = _logged_steps(log_file)
        if not reset and 1 in logged:
            for pid in pids.values():
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            reset = True
        if reset and not training_peak and steps - 1 in logged:
            training_peak = {rank: _status_kib(pid, "VmHWM") for rank, pid in pids.items()}
        time.sleep(0.02)
    stderr = proc.stderr.read()
    if proc.returncode != 0 or not training_peak:
        raise SystemExit(f"the {nproc}-process run failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"training_peak_mib": {r: v / 1024 for r, v in training_peak.items()},
            "whole_run_peak_mib": {r: v / 1024 for r, v in whole_peak.items()}}


def shard_bytes(nproc: int, folder: Path) -> list:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           __file__, "--shard-report", str(folder / "config.yaml")]
    out = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
    line = next((l for l in out.stdout.splitlines() if l.startswith("SHARDS ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"--shard-report with {nproc} processes failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("SHARDS "):])


def import_rss_mib() -> float:
    code = "import torch, torchtune.training, sys; print(open('/proc/self/status').read())"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return next(int(l.split()[1]) for l in out.splitlines() if l.startswith("VmRSS:")) / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a ~10M-parameter model, for a smoke run")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=2, help="per rank, the same for both runs")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--default-malloc", action="store_true", help="run the recipe without MALLOC_MMAP_THRESHOLD_")
    p.add_argument("--prepare", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--shard-report", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = SIZES["quick" if args.quick else "full"]
    if args.prepare:
        return prepare(Path(args.prepare), sizes)
    if args.shard_report:
        return shard_report(args.shard_report)
    if args.steps < 3:
        raise SystemExit("--steps must be >= 3 (the training peak spans steps 2 .. steps - 1)")

    with tempfile.TemporaryDirectory(prefix="bench_dist_mem_") as tmp:
        folder = Path(tmp)
        cmd = [sys.executable, __file__, "--prepare", str(folder)] + (["--quick"] if args.quick else [])
        prepared = json.loads(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout)
        n = prepared["num_params"]
        print(f"model: Llama 2 {sizes}, {n / 1e6:.1f}M parameters, fp32 ({n * 4 / _MIB:.0f} MiB of weights)")
        print(f"run: {args.steps} steps, batch {args.batch_size} per rank, {args.seq_len} tokens per row, AdamW")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if not args.default_malloc:
            env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        print(f"recipe runs with MALLOC_MMAP_THRESHOLD_={env.get('MALLOC_MMAP_THRESHOLD_', '(glibc default)')}")
        print(f"RSS of a process that only imported torch + torchtune: {import_rss_mib():.0f} MiB\n")
        print(f"{'procs':>5} {'rank':>4} {'param shards':>13} {'AdamW state':>12} {'w+grad+AdamW':>13} "
              f"{'training peak RSS':>18} {'whole-run peak RSS':>19}")
        held, peak = {}, {}
        for nproc in (1, 2):
            shards = shard_bytes(nproc, folder)
            rss = run_recipe(nproc, folder, args.steps, args.batch_size, args.seq_len, env)
            for rank in range(nproc):
                params, adam = shards[rank]["param_bytes"] / _MIB, shards[rank]["optimizer_bytes"] / _MIB
                held[nproc, rank], peak[nproc, rank] = 2 * params + adam, rss["training_peak_mib"][rank]
                print(f"{nproc:>5} {rank:>4} {params:>9.1f} MiB {adam:>8.1f} MiB {2 * params + adam:>9.1f} MiB "
                      f"{peak[nproc, rank]:>14.0f} MiB {rss['whole_run_peak_mib'][rank]:>15.0f} MiB")
        for rank in (0, 1):
            print(f"\n2 processes, rank {rank}: training peak {peak[1, 0] - peak[2, rank]:.0f} MiB below the single "
                  f"process's; its weights + gradients + AdamW state are {held[1, 0] - held[2, rank]:.0f} MiB smaller", end="")
        print()


if __name__ == "__main__":
    sys.exit(main())
