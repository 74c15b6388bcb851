"""The LoRA adapter written in peft format loads onto the HF base with our merged logits."""

import json

import pytest
import torch

from torchtune.training.checkpointing import FullModelHFCheckpointer

RANK, ALPHA = 4, 8.0
TARGETS = ["q_proj", "k_proj", "v_proj", "output_proj"]


@pytest.mark.parametrize("record", [False, True])
def test_peft_adapter_matches_merged_model(tmp_path, tiny, record):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from torchtune.modules.peft import get_merged_lora_ckpt

    base_dir = tmp_path / "base"
    names, _, _ = tiny.write_hf(base_dir, "safetensors", 2, index=True)
    if record:  # what `tune download` leaves behind
        (base_dir / ".tune_download.json").write_text(
            json.dumps({"repo_id": "meta-llama/Llama-2-7b-hf", "revision": "abc123"})
        )
    ckpt = FullModelHFCheckpointer(str(base_dir), names, "LLAMA2", str(tmp_path / "out"))
    base_sd = ckpt.load_checkpoint()["model"]

    model = tiny.model(lora=True, lora_attn_modules=TARGETS, apply_lora_to_mlp=True,
                       apply_lora_to_output=True, lora_rank=RANK, lora_alpha=ALPHA)
    missing, unexpected = model.load_state_dict(base_sd, strict=False)
    assert not unexpected and all("lora_" in k for k in missing)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a trained adapter: lora_b is no longer zero
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    adapter = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}
    assert any(k.startswith("output.lora_") for k in adapter) and any(".mlp.w2.lora_" in k for k in adapter)
    merged = get_merged_lora_ckpt(dict(model.state_dict()), rank=RANK, alpha=ALPHA)

    ckpt.save_checkpoint(
        {"model": merged, "adapter": adapter,
         "adapter_config": {"r": RANK, "lora_alpha": ALPHA,
                            "target_modules": TARGETS + ["w1", "w2", "w3", "output"]}},
        epoch=0,
    )
    peft_dir = tmp_path / "out" / "adapter_0_peft"
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"]) == (RANK, ALPHA)
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj", "lm_head"])
    if record:
        assert config["base_model_name_or_path"] == "meta-llama/Llama-2-7b-hf"
        assert config["revision"] == "abc123"
    else:
        assert config["base_model_name_or_path"] == str(base_dir.resolve())

    tokens = torch.randint(0, tiny.cfg.vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    ours = tiny.model()
    ours.load_state_dict(merged, strict=True)
    hf_base = transformers.LlamaForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    hf_peft = peft.PeftModel.from_pretrained(hf_base, str(peft_dir)).eval()
    with torch.no_grad():
        expected = ours(tokens)
        torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hf_peft(tokens).logits, expected, atol=1e-5, rtol=1e-5)
        # The merged HF output is an ordinary model with the same logits.
        hf_merged = transformers.LlamaForCausalLM.from_pretrained(
            str(tmp_path / "out" / "epoch_0"), torch_dtype=torch.float32).eval()
        torch.testing.assert_close(hf_merged(tokens).logits, expected, atol=1e-5, rtol=1e-5)


def test_peft_adapter_infers_rank_and_modules_and_needs_alpha(tmp_path, tiny):
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 1, index=False)
    ckpt = FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
    adapter = {"layers.0.attn.v_proj.lora_a.weight": torch.zeros(2, tiny.cfg.dim),
               "layers.0.attn.v_proj.lora_b.weight": torch.zeros(16, 2)}
    ckpt.save_checkpoint({"adapter": adapter, "adapter_config": {"lora_alpha": 4}}, epoch=1, adapter_only=True)
    config = json.loads((tmp_path / "out" / "adapter_1_peft" / "adapter_config.json").read_text())
    assert (config["r"], config["target_modules"]) == (2, ["v_proj"])
    with pytest.raises(ValueError, match=r"needs 'lora_alpha'"):
        ckpt.save_checkpoint({"adapter": adapter, "adapter_config": {}}, epoch=1, adapter_only=True)
    with pytest.raises(ValueError, match=r"adapter_config r=8 but the adapter's lora_a rank is 2"):
        ckpt.save_checkpoint({"adapter": adapter, "adapter_config": {"r": 8, "lora_alpha": 4}},
                             epoch=1, adapter_only=True)
