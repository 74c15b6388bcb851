"""The design document's checkpointer blocks, pasted as written (paths moved under a temp
folder), drive real runs; their outputs load in transformers and in our Meta loader."""

import textwrap

import torch

from recipe_helpers import (
    REPO,
    STORIES,
    common_overrides,
    copy_meta_checkpoint,
    load_meta,
    losses,
    run_recipe,
    write_hf_checkpoint,
)
from torchtune.models.llama2 import llama2
from torchtune.models.llama2._convert_weights import tune_to_hf
from torchtune.utils import FullModelHFCheckpointer, FullModelMetaCheckpointer

META_BLOCK = """
checkpointer:
  _component_: torchtune.utils.FullModelMetaCheckpointer
  checkpoint_dir: /tmp/llama2
  checkpoint_files: [consolidated.00.pth]
  output_dir: /tmp/llama2
  model_type: LLAMA2
resume_from_checkpoint: False
"""

HF_LORA_BLOCK = """
checkpointer:
  _component_: torchtune.utils.FullModelHFCheckpointer
  checkpoint_dir: /tmp/llama2-hf
  checkpoint_files: [pytorch_model-00001-of-00002.bin, pytorch_model-00002-of-00002.bin]
  adapter_checkpoint: adapter_0.pt
  recipe_checkpoint: recipe_state.pt
  output_dir: /tmp/llama2-hf
  model_type: LLAMA2
"""


def config_with_block(tmp_path, builtin: str, block: str, resume: bool) -> str:
    """The built-in config with its checkpointer replaced by ``block`` (temp paths)."""
    text = (REPO / "recipes" / "configs" / f"{builtin}.yaml").read_text()
    head, _, tail = text.partition("checkpointer:")
    tail = tail[tail.index("resume_from_checkpoint:"):].split("\n", 1)[1]
    block = block.replace("/tmp/", f"{tmp_path}/")
    if "resume_from_checkpoint" not in block:
        block += f"resume_from_checkpoint: {resume}\n"
    path = tmp_path / f"{builtin.replace('/', '_')}_{resume}.yaml"
    path.write_text(head + textwrap.dedent(block).lstrip("\n") + tail)
    return str(path)


def tiny_model():
    return llama2(vocab_size=512, num_layers=5, num_heads=8, num_kv_heads=4, embed_dim=64,
                  max_seq_len=512, intermediate_dim=172, norm_eps=1e-5)


def test_meta_block_full_finetune(tmp_path):
    copy_meta_checkpoint(tmp_path / "llama2")
    config = config_with_block(tmp_path, "stories260K/full_single_device", META_BLOCK, resume=False)
    run_recipe("full_finetune_single_device", config, common_overrides(tmp_path / "run"))
    out = tmp_path / "llama2"
    # output_dir == checkpoint_dir, as in the document: the base stays, the output lands beside it
    assert {"consolidated.00.pth", "meta_model_0.pt", "params.json", "tokenizer.model"} <= {p.name for p in out.iterdir()}
    trained = FullModelMetaCheckpointer(
        checkpoint_dir=str(out), checkpoint_files=["meta_model_0.pt"], output_dir=str(tmp_path / "x"),
        model_type="LLAMA2",
    ).load_checkpoint()["model"]
    base = load_meta(STORIES / "consolidated.00.pth")
    changed = [k for k in base if not torch.equal(base[k], trained[k])]
    assert len(changed) == len(base)  # every tensor was trained
    model = tiny_model()
    model.load_state_dict(trained)
    assert torch.isfinite(model(torch.tensor([[1, 403, 407, 261, 378]]))).all()


def test_hf_lora_block_trains_resumes_and_loads_in_transformers(tmp_path):
    from transformers import LlamaForCausalLM

    hf_dir = tmp_path / "llama2-hf"
    write_hf_checkpoint(hf_dir, shards=2)
    fresh = config_with_block(tmp_path, "stories260K/lora_single_device", HF_LORA_BLOCK, resume=False)
    resume = config_with_block(tmp_path, "stories260K/lora_single_device", HF_LORA_BLOCK, resume=True)
    extra = {"sample_prompt": "null", "epochs": 2}
    straight = tmp_path / "straight"
    # A fresh run ignores adapter_checkpoint/recipe_checkpoint; it writes them for epoch 0.
    run_recipe("lora_finetune_single_device", fresh,
               common_overrides(straight, **extra) + [f"checkpointer.output_dir={straight}"])
    run_recipe("lora_finetune_single_device", fresh, common_overrides(tmp_path / "first", **extra))
    assert (hf_dir / "adapter_0.pt").exists() and (hf_dir / "recipe_state.pt").exists()
    # Resume with the block unchanged: checkpoint files still name the base model.
    run_recipe("lora_finetune_single_device", resume, common_overrides(tmp_path / "second", **extra))
    assert losses(tmp_path / "second") == {s: l for s, l in losses(straight).items() if s > 4}

    epoch_dir = hf_dir / "epoch_1"
    assert sorted(p.name for p in epoch_dir.glob("pytorch_model-*.bin")) == [
        "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    ours = FullModelHFCheckpointer(
        checkpoint_dir=str(epoch_dir),
        checkpoint_files=["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"],
        output_dir=str(tmp_path / "x"), model_type="LLAMA2",
    ).load_checkpoint()["model"]
    straight_sd = FullModelHFCheckpointer(
        checkpoint_dir=str(straight / "epoch_1"),
        checkpoint_files=["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"],
        output_dir=str(tmp_path / "y"), model_type="LLAMA2",
    ).load_checkpoint()["model"]
    for k in ours:
        assert torch.equal(ours[k], straight_sd[k]), k  # resumed == uninterrupted, bit for bit
    base = load_meta(STORIES / "consolidated.00.pth")
    assert not torch.equal(ours["layers.0.attn.q_proj.weight"], base["layers.0.attn.q_proj.weight"])

    model = tiny_model().eval()
    model.load_state_dict(ours)
    hf = LlamaForCausalLM.from_pretrained(str(epoch_dir)).eval()
    tokens = torch.tensor([[1, 403, 407, 261, 378, 263, 290]])
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, model(tokens), atol=1e-5, rtol=0)
    assert tune_to_hf(ours, num_heads=8, num_kv_heads=4, dim=64).keys() == hf.state_dict().keys()
