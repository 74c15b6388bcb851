"""Phi-3: 0.6.1's builders at their exact size, and checkpoints as transformers' Phi3ForCausalLM
lays them out (fused qkv_proj / gate_up_proj), read and written back exactly."""

import inspect
import logging

import pytest
import torch

from hf_folders import ROWS, write_folder
from torchtune.models.phi3 import lora_phi3, lora_phi3_mini, phi3, phi3_mini, phi3_hf_to_tune, phi3_tune_to_hf
from torchtune.training import check_attention_layout
from torchtune.utils import FullModelHFCheckpointer

transformers = pytest.importorskip("transformers")


def test_mini_size_equals_transformers_on_the_meta_device():
    # microsoft/Phi-3-mini-4k-instruct config.json
    config = transformers.Phi3Config(
        vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
        rms_norm_eps=1e-5, sliding_window=2047, tie_word_embeddings=False)
    with torch.device("meta"):
        ours, theirs = phi3_mini(), transformers.Phi3ForCausalLM(config)
    count = sum(p.numel() for p in ours.parameters())
    print(f"phi3_mini: {count:,} parameters")
    assert count == sum(p.numel() for p in theirs.parameters()) == 3_821_079_552
    assert ours.description.layers[0].attention.sliding_window == 2047


def test_lora_builders_take_061s_arguments():
    params = list(inspect.signature(lora_phi3).parameters)
    assert params[:3] == ["lora_attn_modules", "apply_lora_to_mlp", "apply_lora_to_output"]
    assert params[-5:] == ["lora_rank", "lora_alpha", "lora_dropout", "use_dora", "quantize_base"]
    assert inspect.signature(lora_phi3_mini).parameters["lora_dropout"].default == 0.0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phi3") / "tiny-phi3"
    write_folder(ROWS["phi3"], folder)
    return folder


def test_fused_tensors_split_on_load_and_join_on_save(folder, tmp_path, caplog):
    from safetensors.torch import load_file

    hf_sd = load_file(str(folder / "model.safetensors"))
    assert any("qkv_proj" in k for k in hf_sd) and any("gate_up_proj" in k for k in hf_sd)
    c = ROWS["phi3"].config
    heads = dict(num_heads=c["num_attention_heads"], num_kv_heads=c["num_key_value_heads"], dim=c["hidden_size"])
    ours = phi3_hf_to_tune(hf_sd, **heads)
    assert "layers.0.attn.k_proj.weight" in ours and "layers.0.mlp.w3.weight" in ours
    back = phi3_tune_to_hf(ours, **heads)
    assert back.keys() == hf_sd.keys() and all(torch.equal(back[k], hf_sd[k]) for k in hf_sd)

    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))  # PHI3_MINI, inferred
    model = phi3(vocab_size=320, num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                 num_kv_heads=c["num_key_value_heads"], embed_dim=c["hidden_size"],
                 intermediate_dim=c["intermediate_size"], max_seq_len=256, norm_eps=c["rms_norm_eps"],
                 sliding_window=16)
    check_attention_layout(model, ckpt.model_layout)
    state = ckpt.load_checkpoint()
    model.load_state_dict(state["model"])
    hf = transformers.Phi3ForCausalLM.from_pretrained(folder).float().eval()
    tokens = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(tokens), hf(tokens).logits, atol=1e-5, rtol=0)
    ckpt.save_checkpoint(state, epoch=0)
    saved = load_file(str(tmp_path / "out" / "epoch_0" / "model.safetensors"))
    assert saved.keys() == hf_sd.keys() and all(torch.equal(saved[k], hf_sd[k]) for k in hf_sd)


def test_phi4_14b_size_and_rope_equal_the_checkpoints_on_the_meta_device():
    from torchtune.models.phi4 import lora_phi4_14b, phi4_14b

    # microsoft/phi-4 config.json
    config = transformers.Phi3Config(
        vocab_size=100352, hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
        num_attention_heads=40, num_key_value_heads=10, max_position_embeddings=16384,
        rms_norm_eps=1e-5, rope_theta=250000.0, tie_word_embeddings=False)
    with torch.device("meta"):
        ours, theirs = phi4_14b(), transformers.Phi3ForCausalLM(config)
    count = sum(p.numel() for p in ours.parameters())
    print(f"phi4_14b: {count:,} parameters")
    assert count == sum(p.numel() for p in theirs.parameters()) == 14_659_507_200
    assert ours.description.layers[0].attention.rope.base == 250_000  # 0.6.1 used 10,000
    assert inspect.signature(lora_phi4_14b).parameters["lora_dropout"].default == 0.0


def test_061_rope_module_equals_transformers_rotate_half():
    """``Phi3RotaryPositionalEmbeddings`` (0.6.1's name) rotates q/k in the checkpoint's
    rotate-half layout: transformers' ``apply_rotary_pos_emb`` in float64 is the reference;
    fp32 cos/sin of angles up to 63 rad carry ~63 * 2**-24 of error, and q's entries are
    O(3): 1e-5 bounds it."""
    from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb

    from torchtune.models.phi3 import Phi3RotaryPositionalEmbeddings

    dim, s = 16, 64
    rope = Phi3RotaryPositionalEmbeddings(dim, max_seq_len=s, base=10_000)
    x = torch.randn(2, s, 3, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    inv = 1.0 / (10_000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    angles = torch.outer(torch.arange(s, dtype=torch.float64), inv)
    emb = torch.cat([angles, angles], dim=-1)[None]
    ref, _ = apply_rotary_pos_emb(x.transpose(1, 2), x.transpose(1, 2), emb.cos(), emb.sin())
    torch.testing.assert_close(rope(x.float()).double(), ref.transpose(1, 2), atol=1e-5, rtol=0)
    # positions given: tokens 0 and 1 placed at 5 and 9
    at, _ = apply_rotary_pos_emb(x[:1, :2].transpose(1, 2), x[:1, :2].transpose(1, 2),
                                 emb[:, [5, 9]].cos(), emb[:, [5, 9]].sin())
    got = rope(x[:1, :2].float(), input_pos=torch.tensor([[5, 9]])).double()
    torch.testing.assert_close(got, at.transpose(1, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("row, targets, dora", [
    ("phi3", ["q_proj", "v_proj", "output_proj"], False),            # k has no adapter: zero B rows
    ("phi4-mini", ["q_proj", "k_proj", "v_proj", "output_proj"], True),  # partial rotary, tied, DoRA
])
def test_peft_adapter_on_the_fused_modules(row, targets, dora, tmp_path_factory, tmp_path):
    """The adapter on separate q/k/v and gate/up is written as peft's Phi-3 adapter on
    qkv_proj / gate_up_proj (block-diagonal, rank_pattern): peft over transformers' model
    gives our LoRA model's logits. fp32, two width-48 layers: rounding ~1e-6."""
    import json

    from peft import PeftModel

    from torchtune.models import lora_auto_model
    from torchtune.modules.peft.peft_utils import get_lora_adapter_config

    folder = tmp_path_factory.mktemp(row) / row
    write_folder(ROWS[row], folder)
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))
    model = lora_auto_model(str(folder), targets, apply_lora_to_mlp=True, lora_rank=4,
                            lora_alpha=8, use_dora=dora)
    state = ckpt.load_checkpoint()
    model.load_state_dict(state["model"], strict=False)
    for m in model.modules():  # DoRA starts from the loaded base weight's row norms
        if getattr(m, "use_dora", False):
            m.initialize_dora_magnitude()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a trained adapter
        for name, p in model.named_parameters():
            if "lora_" in name or name.endswith("magnitude"):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    adapter = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k or k.endswith("magnitude")}
    ckpt.save_checkpoint({"model": state["model"], "adapter": adapter,
                          "adapter_config": get_lora_adapter_config(model)}, epoch=0)
    peft_dir = tmp_path / "out" / "adapter_0_peft"
    config = json.loads((peft_dir / "adapter_config.json").read_text())
    n = sum(t in targets for t in ("q_proj", "k_proj", "v_proj"))
    assert sorted(config["target_modules"]) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert config["rank_pattern"] == {"qkv_proj": 4 * n, "gate_up_proj": 8}
    hf = transformers.Phi3ForCausalLM.from_pretrained(folder).float()
    hf_peft = PeftModel.from_pretrained(hf, str(peft_dir)).eval()
    tokens = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf_peft(tokens).logits, model.eval()(tokens), atol=1e-5, rtol=0)


def test_partly_fused_dora_writes_no_peft_adapter(tmp_path, caplog):
    from torchtune.models.phi3._convert_weights import peft_unsupported

    assert peft_unsupported({"target_modules": ["q_proj", "v_proj"], "use_dora": True}).startswith(
        "a DoRA adapter on only some of q_proj, k_proj, v_proj")
    assert peft_unsupported({"target_modules": ["q_proj", "v_proj"], "use_dora": False}) is None
    assert peft_unsupported({"target_modules": ["q_proj", "k_proj", "v_proj", "w1", "w3"], "use_dora": True}) is None


def test_longrope_folder_is_refused_in_one_line(folder, tmp_path):
    """Phi-3 / Phi-4-mini 128k checkpoints scale RoPE with LongRoPE, which the decoder does
    not implement: loading one into Phi-3's builder is refused, never silently wrong."""
    import json
    import shutil

    from torchtune._errors import UserValueError

    long = tmp_path / "long"
    shutil.copytree(folder, long)
    config = json.loads((long / "config.json").read_text())
    config.update(original_max_position_embeddings=64,
                  rope_scaling={"type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4})
    (long / "config.json").write_text(json.dumps(config))
    ckpt = FullModelHFCheckpointer(str(long), output_dir=str(tmp_path / "out"))
    c = ROWS["phi3"].config
    model = phi3(vocab_size=320, num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                 num_kv_heads=c["num_key_value_heads"], embed_dim=c["hidden_size"],
                 intermediate_dim=c["intermediate_size"], max_seq_len=256, sliding_window=16)
    with pytest.raises(UserValueError, match=r"rope_type 'longrope' is not supported") as err:
        check_attention_layout(model, ckpt.model_layout)
    assert "\n" not in str(err.value)
