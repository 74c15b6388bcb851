"""Qwen 3 MoE and Mixtral against transformers' Qwen3MoeForCausalLM and
MixtralForCausalLM: the named sizes are the published configs with transformers'
parameter counts; on tiny random folders (rows ``qwen3-moe``: 8 experts, 2 per token, one
dense layer; ``mixtral``: 4 experts, a window) the load-balancing loss and every gradient
of the training loss equal transformers' (logits and KV-cache decoding:
test_auto_model.py), and a save writes the files' per-expert tensors back."""

import json

import pytest
import torch

from hf_folders import ROWS, write_folder
from torchtune.models import auto_model
from torchtune.models._auto import description_from_hf_config
from torchtune.models._description import differences
from torchtune.models.mixtral import mixtral_8x7b
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
    # mistralai/Mixtral-8x7B-v0.1
    mixtral_8x7b: {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "bos_token_id": 1,
                   "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 14336,
                   "max_position_embeddings": 32768, "num_attention_heads": 32, "num_experts_per_tok": 2,
                   "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
                   "output_router_logits": False, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
                   "router_aux_loss_coef": 0.02, "sliding_window": None, "tie_word_embeddings": False,
                   "vocab_size": 32000},
}


@pytest.mark.parametrize("builder", list(OFFICIAL), ids=lambda b: b.__name__)
def test_named_sizes_are_the_published_configs(builder):
    config = OFFICIAL[builder]
    assert differences(builder.describe(), description_from_hf_config(config)) == []
    with torch.device("meta"):
        ours = builder()
        theirs = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(
            **{k: v for k, v in config.items() if k not in ("architectures", "max_window_layers")}))
    total = sum(p.numel() for p in ours.parameters())
    assert total == sum(p.numel() for p in theirs.parameters())
    experts = sum(p.numel() for n, p in ours.named_parameters() if ".experts." in n)
    num_experts = config.get("num_experts") or config["num_local_experts"]
    active = total - experts + experts * config["num_experts_per_tok"] // num_experts
    print(f"{builder.__name__}: {total:,} parameters, {active:,} active per token")
    assert ours.description.router_aux_loss_coef == config["router_aux_loss_coef"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    made = {}

    def make(name):
        if name not in made:
            folder = tmp_path_factory.mktemp(name) / name
            made[name] = folder, write_folder(ROWS[name], folder)
        return made[name]

    return make


def _ours(folder, tmp_path):
    model = auto_model(str(folder))
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))
    model.load_state_dict(ckpt.load_checkpoint()["model"])
    return model, ckpt


# How each family's files name an expert's projections and the router (transformers 5's
# modules stack the experts and call the router mlp.gate in both).
_FILE_NAMES = {
    "qwen3-moe": ("mlp", {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}, ModelType.QWEN3_MOE),
    "mixtral": ("block_sparse_moe", {"gate": "w1", "up": "w3", "down": "w2"}, ModelType.MIXTRAL),
}


def _per_expert(sd, name):
    """transformers 5's module gradients (``mlp.experts.gate_up_proj [E, 2h, d]``,
    ``mlp.experts.down_proj [E, d, h]``) under the names of the family's files, one tensor
    per expert, which our key map reads."""
    block, proj, _ = _FILE_NAMES[name]
    out = {}
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        file_prefix = prefix.replace(".mlp.", f".{block}.")
        if leaf == "gate_up_proj":
            gate, up = value.chunk(2, dim=1)
            for e in range(value.shape[0]):
                out[f"{file_prefix}.{e}.{proj['gate']}.weight"] = gate[e]
                out[f"{file_prefix}.{e}.{proj['up']}.weight"] = up[e]
        elif leaf == "down_proj" and prefix.endswith("experts"):
            out.update({f"{file_prefix}.{e}.{proj['down']}.weight": value[e] for e in range(value.shape[0])})
        elif key.endswith(".mlp.gate.weight"):
            out[key.replace(".mlp.", f".{block}.")] = value
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("name", ["qwen3-moe", "mixtral"])
def test_aux_loss_and_gradients_equal_transformers(name, tiny, tmp_path):
    """transformers' training loss is CE + router_aux_loss_coef * aux; ours adds the same
    load-balancing loss from the model's router stats. fp32, 2 layers of width 48."""
    folder, hf = tiny(name)
    ours, _ = _ours(folder, tmp_path)
    tokens = torch.randint(0, ours.tok_embeddings.num_embeddings, (2, 40), generator=torch.Generator().manual_seed(2))
    hf.train()
    out = hf(tokens, labels=tokens, output_router_logits=True)
    out.loss.backward()
    logits = ours(tokens)
    aux = load_balancing_loss(moe_router_stats(ours))
    used = moe_router_stats(ours)[0].tokens_per_expert
    assert (used > 0).all()  # 80 tokens x 2 reach every expert
    torch.testing.assert_close(aux, out.aux_loss, atol=1e-6, rtol=0)
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    loss = ce + ours.description.router_aux_loss_coef * aux
    loss.backward()
    torch.testing.assert_close(loss, out.loss, atol=1e-6, rtol=0)
    config = json.loads((folder / "config.json").read_text())
    grads = get_converter(_FILE_NAMES[name][2]).hf_to_tune(
        _per_expert({k: p.grad for k, p in hf.named_parameters()}, name),
        num_heads=config["num_attention_heads"], num_kv_heads=config["num_key_value_heads"],
        dim=config["hidden_size"], head_dim=config.get("head_dim"))
    mine = dict(ours.named_parameters())
    assert set(grads) == set(mine)
    for key, grad in grads.items():
        scale = max(float(grad.abs().max()), 1e-3)
        torch.testing.assert_close(mine[key].grad, grad, atol=1e-5 * scale, rtol=0, msg=key)


@pytest.mark.parametrize("name", ["qwen3-moe", "mixtral"])
def test_save_writes_one_tensor_per_expert_as_the_files_have_them(name, tiny, tmp_path):
    from safetensors.torch import load_file

    folder, _ = tiny(name)
    ours, ckpt = _ours(folder, tmp_path)
    assert tuple(ours.layers[0].mlp.experts.gate_proj.shape) == ((8, 16, 48) if name == "qwen3-moe" else (4, 96, 48))
    ckpt.save_checkpoint({"model": ours.state_dict()}, epoch=0)
    before = load_file(str(folder / "model.safetensors"))
    after = load_file(str(tmp_path / "out" / "epoch_0" / "model.safetensors"))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert ("model.layers.0.mlp.experts.7.down_proj.weight" if name == "qwen3-moe"
            else "model.layers.0.block_sparse_moe.experts.3.w2.weight") in after
