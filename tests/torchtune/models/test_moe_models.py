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


@pytest.mark.parametrize("name", ["qwen3-moe-sparse", "mixtral"])
def test_lora_on_router_and_experts_is_peft_on_the_saved_adapter(name, tiny, tmp_path):
    """Adapters on attention, the router and every expert (random, as after training),
    saved by the checkpointer: peft reads adapter_0_peft (per-expert names, which it fuses
    into transformers 5's stacked experts) and gives our logits and, trained, our
    gradients (its fused gate/up adapter is [A_gate; A_up] with a block-diagonal B); the
    merged output is the same model in transformers. fp32."""
    from peft import PeftModel

    from torchtune.models import lora_auto_model
    from torchtune.modules.peft import get_adapter_params, get_merged_lora_ckpt, set_trainable_params
    from torchtune.modules.peft.peft_utils import get_lora_adapter_config

    folder, _ = tiny(name)
    ours = lora_auto_model(str(folder), ["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=4, lora_alpha=8)
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))
    assert not ours.load_state_dict(ckpt.load_checkpoint()["model"], strict=False).unexpected_keys
    adapters = get_adapter_params(ours)
    assert "layers.0.mlp.router.lora_a.weight" in adapters and "layers.0.mlp.experts.lora_up_b" in adapters
    torch.manual_seed(3)
    with torch.no_grad():
        for p in adapters.values():
            p.normal_(0, 0.1)
    state = ours.state_dict()
    ckpt.save_checkpoint({"model": get_merged_lora_ckpt(state, 4, 8), "adapter_config": get_lora_adapter_config(ours),
                          "adapter": {k: state[k] for k in adapters}}, epoch=0)
    base = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    theirs = PeftModel.from_pretrained(base, str(tmp_path / "out" / "adapter_0_peft"), is_trainable=True)
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "epoch_0", dtype=torch.float32)
    tokens = torch.randint(0, ours.tok_embeddings.num_embeddings, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = ours.eval()(tokens)
        torch.testing.assert_close(logits, theirs.eval()(tokens).logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, merged.eval()(tokens).logits, atol=1e-5, rtol=0)

    set_trainable_params(ours, adapters)
    ours.train(), theirs.train()
    ce = torch.nn.functional.cross_entropy(ours(tokens)[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    ce.backward()
    theirs(tokens, labels=tokens).loss.backward()
    grads = {k.replace(".default", ""): p.grad for k, p in theirs.named_parameters() if p.requires_grad}
    rank, num_experts = 4, ours.layers[0].mlp.num_experts
    for i, layer in enumerate(ours.layers):
        experts, prefix = layer.mlp.experts, f"base_model.model.model.layers.{i}.mlp."
        h = experts.hidden_dim
        gate_up_a = grads[prefix + "experts.base_layer.lora_A.weight"].reshape(num_experts, 2 * rank, -1)
        gate_up_b = grads[prefix + "experts.base_layer.lora_B.weight"].reshape(2 * h, 2 * rank, num_experts).permute(2, 0, 1)
        expected = {
            "lora_gate_a": gate_up_a[:, :rank], "lora_up_a": gate_up_a[:, rank:],
            "lora_gate_b": gate_up_b[:, :h, :rank], "lora_up_b": gate_up_b[:, h:, rank:],
            "lora_down_a": grads[prefix + "experts.lora_A.weight"].reshape(num_experts, rank, -1),
            "lora_down_b": grads[prefix + "experts.lora_B.weight"].reshape(-1, rank, num_experts).permute(2, 0, 1),
        }
        expected = {f"experts.{k}": v for k, v in expected.items()}
        expected["router.lora_a.weight"] = grads[prefix + "gate.lora_A.weight"]
        expected["router.lora_b.weight"] = grads[prefix + "gate.lora_B.weight"]
        for key, grad in expected.items():
            scale = max(float(grad.abs().max()), 1e-3)
            torch.testing.assert_close(layer.mlp.get_parameter(key).grad, grad, atol=1e-5 * scale, rtol=0,
                                       msg=f"layer {i} {key}")


def test_lora_twins_adapt_the_router_by_default_and_qlora_quantizes_the_experts():
    """``apply_lora_to_router`` defaults to True in every MoE twin; QLoRA keeps the experts
    (and attention) in NF4 and the router in full precision; DoRA on a router is refused
    in one line."""
    import inspect

    from torchtune._errors import UserValueError
    from torchtune.models.mixtral import lora_mixtral, lora_mixtral_8x7b, qlora_mixtral_8x7b
    from torchtune.models.qwen3_moe import (
        lora_qwen3_moe,
        lora_qwen3_moe_30b_a3b,
        qlora_qwen3_moe_235b_a22b,
        qlora_qwen3_moe_30b_a3b,
    )
    from torchtune.modules.low_precision import is_nf4
    from torchtune.modules.peft import LoRALinear

    for twin in (lora_qwen3_moe, lora_qwen3_moe_30b_a3b, lora_mixtral, lora_mixtral_8x7b):
        assert inspect.signature(twin).parameters["apply_lora_to_router"].default is True, twin.__name__
    for qlora, lora in ((qlora_qwen3_moe_30b_a3b, lora_qwen3_moe_30b_a3b), (qlora_qwen3_moe_235b_a22b, None),
                        (qlora_mixtral_8x7b, lora_mixtral_8x7b)):
        assert qlora.keywords == {"quantize_base": True} and (lora is None or qlora.func is lora)
    sizes = dict(vocab_size=64, num_layers=1, num_heads=2, num_kv_heads=2, embed_dim=128, intermediate_dim=256,
                 moe_intermediate_dim=32, num_experts=8, experts_per_token=2, max_seq_len=32, head_dim=64,
                 lora_rank=4, lora_alpha=8)
    pytest.importorskip("torchao")
    mlp = lora_qwen3_moe(["q_proj", "v_proj"], quantize_base=True, **sizes).layers[0].mlp
    assert is_nf4(mlp.experts.down_proj) and isinstance(mlp.router, LoRALinear) and not is_nf4(mlp.router.weight)
    with pytest.raises(UserValueError, match="DoRA on a mixture-of-experts router.*apply_lora_to_router=False"):
        lora_qwen3_moe(["q_proj"], use_dora=True, **sizes)
    assert isinstance(lora_qwen3_moe(["q_proj"], False, False, False, use_dora=True, **sizes).layers[0].mlp.router,
                      torch.nn.Linear)


def test_no_peft_adapter_where_peft_would_drop_the_dense_layers_adapters(tiny, tmp_path, caplog):
    """Row qwen3-moe has a dense layer (mlp_only_layers): with its MLP and the experts
    adapted, peft would fuse gate_proj/up_proj/down_proj into the experts on load and lose
    the dense layer's adapters, so no adapter_0_peft is written (a warning says why);
    adapter_0.pt and the merged model have everything."""
    from torchtune.models import lora_auto_model
    from torchtune.modules.peft import get_adapter_params, get_merged_lora_ckpt
    from torchtune.modules.peft.peft_utils import get_lora_adapter_config

    folder, _ = tiny("qwen3-moe")
    ours = lora_auto_model(str(folder), ["q_proj"], apply_lora_to_mlp=True, lora_rank=4, lora_alpha=8)
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))
    ours.load_state_dict(ckpt.load_checkpoint()["model"], strict=False)
    state = ours.state_dict()
    adapters = get_adapter_params(ours)
    assert "layers.1.mlp.w1.lora_a.weight" in adapters and "layers.0.mlp.experts.lora_gate_a" in adapters
    ckpt.save_checkpoint({"model": get_merged_lora_ckpt(state, 4, 8), "adapter_config": get_lora_adapter_config(ours),
                          "adapter": {k: state[k] for k in adapters}}, epoch=0)
    assert not (tmp_path / "out" / "adapter_0_peft").exists()
    assert (tmp_path / "out" / "adapter_0.pt").exists()
    assert "mlp_only_layers" in caplog.text
