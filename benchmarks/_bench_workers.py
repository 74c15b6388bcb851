"""The torch side of ``bench_recipes.py``; each mode runs in its own process.

    python benchmarks/_bench_workers.py prepare  SPEC.json
    python benchmarks/_bench_workers.py matmul   SPEC.json
    python benchmarks/_bench_workers.py baseline SPEC.json

``SPEC.json`` holds the arguments; each mode writes its result as JSON to ``spec["out"]``.
The driver never imports torch: on Linux a child's ``ru_maxrss`` starts at its parent's
peak (the kernel carries it across fork + exec), so a heavy driver would inflate every
peak-RSS figure it reads.
"""

import json
import os
import resource
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from torchtune import config
from torchtune.data import CROSS_ENTROPY_IGNORE_IDX, ResumableSampler, padded_collate

_GIB = 1024**3


def _peak_rss_gib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024) / _GIB


def _dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


def _workload_loader(cfg, tokenizer) -> DataLoader:
    """The batches both trainers see: the recipe's own dataset, sampler and collate.

    Built exactly as the recipes' ``_setup_data`` builds them, but always unpacked: the
    baseline is a plain padded-batch loop whatever the recipe's config does.
    """
    dataset_cfg = OmegaConf.merge(cfg.dataset, {"packed": False})
    dataset = config.instantiate(dataset_cfg, tokenizer)
    sampler = ResumableSampler(dataset, shuffle=cfg.shuffle, seed=cfg.seed)
    sampler.set_epoch(0)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=partial(
            padded_collate, padding_idx=tokenizer.pad_id, ignore_idx=CROSS_ENTROPY_IGNORE_IDX
        ),
    )


def prepare(spec: dict) -> dict:
    """Write the random-init model (Meta format for the recipe, HF format for the baseline)
    and describe the batches of the run: the non-padding length of every row."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from torchtune.models.llama2._convert_weights import tune_to_hf, tune_to_meta

    cfg = OmegaConf.load(spec["config"])  # the full fine-tune config: plain llama2 model
    m = cfg.model
    base_dir, hf_dir = Path(spec["base_dir"]), Path(spec["hf_dir"])
    base_dir.mkdir(parents=True, exist_ok=True)
    hf_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(spec["init_seed"])
    model = config.instantiate(m)  # exactly the module the recipe builds, fp32
    state_dict = model.state_dict()
    num_params = sum(p.numel() for p in model.parameters())

    torch.save(tune_to_meta(state_dict), base_dir / "consolidated.00.pth")
    params = {
        "dim": m.embed_dim, "n_layers": m.num_layers, "n_heads": m.num_heads,
        "n_kv_heads": m.num_kv_heads, "vocab_size": m.vocab_size, "norm_eps": m.norm_eps,
        "max_seq_len": m.max_seq_len, "hidden_dim": m.intermediate_dim,
    }
    (base_dir / "params.json").write_text(json.dumps(params, indent=2) + "\n")
    shutil.copy(cfg.tokenizer.path, base_dir / "tokenizer.model")

    LlamaConfig(
        vocab_size=m.vocab_size, hidden_size=m.embed_dim, intermediate_size=m.intermediate_dim,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_kv_heads, max_position_embeddings=m.max_seq_len,
        rms_norm_eps=m.norm_eps, rope_theta=10000.0, tie_word_embeddings=False,
    ).save_pretrained(hf_dir)
    hf_sd = tune_to_hf(state_dict, m.num_heads, m.num_kv_heads, m.embed_dim)
    save_file({k: v.contiguous() for k, v in hf_sd.items()}, hf_dir / "model.safetensors",
              metadata={"format": "pt"})
    del model, state_dict, hf_sd

    tokenizer = config.instantiate(cfg.tokenizer)
    loader = _workload_loader(cfg, tokenizer)
    if len(loader) < spec["total_steps"]:
        raise ValueError(f"the dataset gives {len(loader)} batches; the run needs {spec['total_steps']}")
    steps = []
    for step, batch in enumerate(loader, start=1):
        if step > spec["total_steps"]:
            break
        tokens = batch["tokens"]
        steps.append({
            "row_lengths": (tokens != tokenizer.pad_id).sum(dim=1).tolist(),
            "padded_len": tokens.shape[1],
            "target_tokens": int((batch["labels"][:, 1:] != CROSS_ENTROPY_IGNORE_IDX).sum()),
        })
    return {
        "num_params": num_params,
        "vocab_size": m.vocab_size,
        "tokenizer_vocab_size": tokenizer.vocab_size,
        "dataset_len": len(loader.dataset),
        "steps": steps,
    }


def matmul(spec: dict) -> dict:
    """Best-of-N throughput of one large ``torch.mm``: the machine's practical matmul peak."""
    n, device, dtype = spec["n"], torch.device(spec["device"]), _dtype(spec["dtype"])
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    sync()
    best = float("inf")
    for _ in range(spec["reps"]):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return {"n": n, "flops": 2 * n**3 / best, "seconds": best, "threads": torch.get_num_threads()}


def baseline(spec: dict) -> dict:
    """A plain transformers (+ peft) loop over the recipe's batches: forward with labels,
    backward, clip, AdamW step. Timed like the recipe: from the end of one optimizer step
    to the end of the next, so fetching the batch is inside the step."""
    import transformers

    cfg = OmegaConf.load(spec["config"])
    device, dtype = torch.device(spec["device"]), _dtype(spec["dtype"])
    torch.manual_seed(cfg.seed)
    tokenizer = config.instantiate(cfg.tokenizer)
    loader = _workload_loader(cfg, tokenizer)

    model = transformers.LlamaForCausalLM.from_pretrained(spec["hf_dir"], dtype=dtype).to(device)
    if spec["lora"]:
        import peft

        lora = peft.LoraConfig(
            r=cfg.model.lora_rank, lora_alpha=cfg.model.lora_alpha,
            lora_dropout=cfg.model.lora_dropout, bias="none", task_type="CAUSAL_LM",
            target_modules=list(cfg.model.lora_attn_modules),
        )
        model = peft.get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.get("weight_decay", 0.01)
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    records = []
    start = time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        if step > spec["total_steps"]:
            break
        tokens, labels = batch["tokens"].to(device), batch["labels"].to(device)
        # Right padding under a causal mask cannot change the non-padding positions, and
        # padded labels are ignored, so no attention_mask: the same maths as the recipe.
        loss = model(input_ids=tokens, labels=labels, use_cache=False).loss
        loss.backward()
        if cfg.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, max_norm=cfg.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()  # also a device sync before the clock is read
        elapsed = time.perf_counter() - start
        record = {
            "step": step, "loss": loss_value, "seconds": elapsed,
            "num_tokens": int((batch["tokens"] != tokenizer.pad_id).sum()),
            "peak_memory_rss": _peak_rss_gib(),
        }
        if device.type == "cuda":
            record["peak_memory_alloc"] = torch.cuda.max_memory_allocated(device) / _GIB
        records.append(record)
        start = time.perf_counter()
    return {"records": records, "trainable_params": sum(p.numel() for p in trainable)}


def main() -> None:
    mode, spec_path = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(spec_path).read_text())
    result = {"prepare": prepare, "matmul": matmul, "baseline": baseline}[mode](spec)
    Path(spec["out"]).write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
