"""Peak memory while a QLoRA model loads its checkpoint, streamed vs whole (a measurement).

    .venv/bin/python benchmarks/bench_qlora_load.py                    # 8 layers, d=2048, bf16 file
    .venv/bin/python benchmarks/bench_qlora_load.py --dtype fp32
    .venv/bin/python benchmarks/bench_qlora_load.py --layers 2 --dim 512 --hidden 1408  # quick

Writes a random Llama-2-shaped HF checkpoint (safetensors), then, in a fresh process per
way of loading, builds ``lora_llama2(quantize_base=True)`` (every decoder linear in NF4) and
loads the file into it as the LoRA recipe does (``load_checkpoint(stream_model=True)`` and
``load_state_dict_in_groups``), or whole (``load_checkpoint()`` then ``load_state_dict``).
Each child resets its peak-RSS counter (``/proc/self/clear_refs``) after building the model
and reports the peak above the resident size it had then. Linux only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

_MIB = 2**20


def _dims(args) -> dict:
    return dict(vocab_size=args.vocab, num_layers=args.layers, num_heads=args.dim // 128,
                num_kv_heads=args.dim // 128, embed_dim=args.dim, intermediate_dim=args.hidden,
                max_seq_len=256)


def write_checkpoint(args, folder: str) -> dict:
    import torch
    from safetensors.torch import save_file

    from torchtune.models.llama2 import llama2
    from torchtune.models.llama2._convert_weights import tune_to_hf

    dims, dtype = _dims(args), {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    with torch.device("meta"):
        shapes = llama2(**dims).state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {k: (0.02 * torch.randn(v.shape, generator=g)).to(dtype) for k, v in shapes.items()}
    heads = dims["num_heads"]
    save_file(tune_to_hf(sd, num_heads=heads, num_kv_heads=heads, dim=args.dim),
              os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "hidden_size": args.dim, "num_attention_heads": heads,
                   "num_key_value_heads": heads}, f)
    return {
        "file": sum(v.nbytes for v in sd.values()),
        "layer": sum(v.nbytes for k, v in sd.items() if k.startswith("layers.0.")),
    }


def child(args, folder: str, mode: str) -> dict:
    import time

    import torch

    from torchtune import training
    from torchtune.models.llama2 import lora_llama2
    from torchtune.modules.low_precision import is_nf4
    from torchtune.training.checkpointing import FullModelHFCheckpointer

    def status() -> dict:
        with open("/proc/self/status") as f:
            return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in f if l.startswith("Vm")}

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    with training.activations_in_own_pages(torch.device("cpu")), training.set_default_dtype(dtype):
        model = lora_llama2(["q_proj", "v_proj"], **_dims(args), lora_rank=8, lora_alpha=16,
                            quantize_base=True)
    nf4 = sum(sum(getattr(p, n).nbytes for n in ("quantized_data", "quantized_scalers",
                                                 "quantization_factor", "scaler_mean", "nf4"))
              for p in model.parameters() if is_nf4(p))
    resident = nf4 + sum(p.nbytes for p in model.parameters() if not is_nf4(p))
    ckpt = FullModelHFCheckpointer(folder, ["model.safetensors"], "LLAMA2", os.path.join(folder, "out"))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before, t0 = status()["VmRSS"], time.perf_counter()
    with training.activations_in_own_pages(torch.device("cpu")):  # as the recipe loads
        if mode == "streamed":
            groups = ckpt.load_checkpoint(stream_model=True)["model"]
            training.load_state_dict_in_groups(model, groups)
        else:
            model.load_state_dict(ckpt.load_checkpoint()["model"], strict=False)
    return {"peak_over_model": status()["VmHWM"] - before, "seconds": time.perf_counter() - t0,
            "model": resident, "rss_before": before}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=5632)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args, *args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_qlora_load_") as folder:
        sizes = write_checkpoint(args, folder)
        flags = [f"--layers={args.layers}", f"--dim={args.dim}", f"--hidden={args.hidden}",
                 f"--vocab={args.vocab}", f"--dtype={args.dtype}"]
        runs = {}
        for mode in ("streamed", "whole"):
            out = subprocess.run([sys.executable, __file__, *flags, "--child", folder, mode],
                                 capture_output=True, text=True, check=True)
            runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args.layers} layers, d={args.dim}, hidden={args.hidden}, vocab={args.vocab}, "
          f"{args.dtype} checkpoint of {sizes['file'] / _MIB:.0f} MiB "
          f"(one decoder layer {sizes['layer'] / _MIB:.0f} MiB); QLoRA model resident "
          f"{runs['streamed']['model'] / _MIB:.0f} MiB")
    print("| load | peak RSS above the built model (MiB) | / checkpoint | seconds |")
    print("| --- | ---: | ---: | ---: |")
    for mode, r in runs.items():
        print(f"| {mode} | {r['peak_over_model'] / _MIB:.0f} | "
              f"{r['peak_over_model'] / sizes['file']:.2f} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
