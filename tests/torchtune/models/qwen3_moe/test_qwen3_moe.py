"""Qwen 3 MoE against transformers' Qwen3MoeForCausalLM: the named sizes are the published
configs with transformers' parameter counts; on a tiny random folder (row ``qwen3-moe`` of
tests/hf_folders.py: 8 experts, 2 per token, one dense layer) the load-balancing loss and
every gradient of the training loss equal transformers' (logits and KV-cache decoding:
test_auto_model.py), and a save writes the files' per-expert tensors back."""

import json

import pytest
import torch

from hf_folders import ROWS, write_folder
from torchtune.models import auto_model
from torchtune.models._auto import description_from_hf_config
from torchtune.models._description import differences
from torchtune.models.qwen3_moe import qwen3_moe_235b_a22b, qwen3_moe_30b_a3b
from torchtune.modules.moe import load_balancing_loss, moe_router_stats
from torchtune.training.checkpointing._utils import get_converter, ModelType
from torchtune.utils import FullModelHFCheckpointer

transformers = pytest.importorskip("transformers")

_COMMON = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "attention_bias": False,
           "decoder_sparse_step": 1, "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 40960,
           "max_window_layers": 48, "mlp_only_layers": [], "norm_topk_prob": True, "num_experts": 128,
           "num_experts_per_tok": 8, "num_key_value_heads": 4, "output_router_logits": False,
           "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
           "sliding_window": None, "tie_word_embeddings": False, "use_sliding_window": False, "vocab_size": 151936}
# The published config.json of each size (Qwen/Qwen3-30B-A3B, Qwen/Qwen3-235B-A22B).
OFFICIAL = {
    qwen3_moe_30b_a3b: dict(_COMMON, hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768,
                            num_attention_heads=32, num_hidden_layers=48),
    qwen3_moe_235b_a22b: dict(_COMMON, hidden_size=4096, intermediate_size=12288, moe_intermediate_size=1536,
                              num_attention_heads=64, num_hidden_layers=94, max_window_layers=94),
}


@pytest.mark.parametrize("builder", list(OFFICIAL), ids=lambda b: b.__name__)
def test_named_sizes_are_the_published_configs(builder):
    config = OFFICIAL[builder]
    assert differences(builder.describe(), description_from_hf_config(config)) == []
    with torch.device("meta"):
        ours = builder()
        theirs = transformers.Qwen3MoeForCausalLM(transformers.Qwen3MoeConfig(
            **{k: v for k, v in config.items() if k not in ("architectures", "model_type", "max_window_layers")}))
    total = sum(p.numel() for p in ours.parameters())
    assert total == sum(p.numel() for p in theirs.parameters())
    experts = sum(p.numel() for n, p in ours.named_parameters() if ".experts." in n)
    active = total - experts + experts * config["num_experts_per_tok"] // config["num_experts"]
    print(f"{builder.__name__}: {total:,} parameters, {active:,} active per token")
    assert ours.description.router_aux_loss_coef == 0.001


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("moe") / "qwen3-moe"
    return folder, write_folder(ROWS["qwen3-moe"], folder)


def _ours(folder, tmp_path):
    model = auto_model(str(folder))
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))
    model.load_state_dict(ckpt.load_checkpoint()["model"])
    return model, ckpt


def _per_expert(sd):
    """transformers 5's modules stack the experts (``experts.gate_up_proj [E, 2h, d]``,
    ``experts.down_proj [E, d, h]``); its files, and our key map, have one tensor each."""
    out = {}
    for key, value in sd.items():
        prefix, _, name = key.rpartition(".")
        if name == "gate_up_proj":
            gate, up = value.chunk(2, dim=1)
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"], out[f"{prefix}.{e}.up_proj.weight"] = gate[e], up[e]
        elif name == "down_proj" and prefix.endswith("experts"):
            out.update({f"{prefix}.{e}.down_proj.weight": value[e] for e in range(value.shape[0])})
        else:
            out[key] = value
    return out


def test_aux_loss_and_gradients_equal_transformers(tiny, tmp_path):
    """transformers' training loss is CE + router_aux_loss_coef * aux; ours adds the same
    load-balancing loss from the model's router stats. fp32, 2 layers of width 48."""
    folder, hf = tiny
    ours, _ = _ours(folder, tmp_path)
    tokens = torch.randint(0, ours.tok_embeddings.num_embeddings, (2, 40), generator=torch.Generator().manual_seed(2))
    hf.train()
    out = hf(tokens, labels=tokens, output_router_logits=True)
    out.loss.backward()
    logits = ours(tokens)
    aux = load_balancing_loss(moe_router_stats(ours))
    used = moe_router_stats(ours)[0].tokens_per_expert
    assert (used > 0).all()  # 80 tokens x 2 reach every one of the 8 experts
    torch.testing.assert_close(aux, out.aux_loss, atol=1e-6, rtol=0)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    loss = ce + ours.description.router_aux_loss_coef * aux
    loss.backward()
    torch.testing.assert_close(loss, out.loss, atol=1e-6, rtol=0)
    config = json.loads((folder / "config.json").read_text())
    grads = get_converter(ModelType.QWEN3_MOE).hf_to_tune(
        _per_expert({k: p.grad for k, p in hf.named_parameters()}), num_heads=config["num_attention_heads"],
        num_kv_heads=config["num_key_value_heads"], dim=config["hidden_size"], head_dim=config["head_dim"])
    mine = dict(ours.named_parameters())
    assert set(grads) == set(mine)
    for key, grad in grads.items():
        scale = max(float(grad.abs().max()), 1e-3)
        torch.testing.assert_close(mine[key].grad, grad, atol=1e-5 * scale, rtol=0, msg=key)


def test_save_writes_one_tensor_per_expert_as_the_files_have_them(tiny, tmp_path):
    from safetensors.torch import load_file

    folder, _ = tiny
    ours, ckpt = _ours(folder, tmp_path)
    assert tuple(ours.layers[0].mlp.experts.gate_proj.shape) == (8, 16, 48)
    ckpt.save_checkpoint({"model": ours.state_dict()}, epoch=0)
    before = load_file(str(folder / "model.safetensors"))
    after = load_file(str(tmp_path / "out" / "epoch_0" / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert "model.layers.0.mlp.experts.7.down_proj.weight" in after
