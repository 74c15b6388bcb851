"""Gemma, Gemma 2 and Gemma 3 on the shared decoder, against transformers.

- Every named size: the published config.json, read by ``auto_model``, describes the model
  the builder builds, and its parameter count (meta device) equals transformers' model of
  that config (printed).
- Tiny random models (tests/hf_folders.py rows ``gemma``, ``gemma2``, ``gemma3``, their
  windows shorter than the sequences): logits and KV-cache decoding are in
  test_auto_model.py; here gradients, the loss through the fused and chunked losses with
  Gemma 2's final soft-cap, and the multimodal Gemma 3 checkpoint whose text decoder is
  fine-tuned while the vision tower is carried through.
"""

import copy
import json
import logging

import pytest
import torch

from hf_folders import ROWS, write_folder
from torchtune._errors import UserValueError
from torchtune.models import auto_model
from torchtune.models._auto import description_from_hf_config
from torchtune.models._description import differences
from torchtune.models.gemma import gemma_2b, gemma_7b, lora_gemma_2b
from torchtune.models.gemma2 import gemma2_27b, gemma2_2b, gemma2_9b
from torchtune.models.gemma3 import gemma3_12b, gemma3_1b, gemma3_270m, gemma3_27b, gemma3_4b
from torchtune.modules.loss import LinearCrossEntropyLoss
from torchtune.training.checkpointing._utils import get_converter, ModelType
from torchtune.utils import FullModelHFCheckpointer

transformers = pytest.importorskip("transformers")

_GEMMA = {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "bos_token_id": 2,
          "eos_token_id": 1, "pad_token_id": 0, "head_dim": 256, "hidden_act": "gelu",
          "max_position_embeddings": 8192, "rms_norm_eps": 1e-06, "rope_scaling": None,
          "rope_theta": 10000.0, "vocab_size": 256000, "torch_dtype": "bfloat16"}
_GEMMA2 = {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2", "attention_bias": False,
           "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
           "cache_implementation": "hybrid", "eos_token_id": [1, 107], "head_dim": 256,
           "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
           "max_position_embeddings": 8192, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
           "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 256000}
_GEMMA3_SMALL = {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
                 "attention_bias": False, "attn_logit_softcapping": None, "final_logit_softcapping": None,
                 "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 32768,
                 "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_local_base_freq": 10000.0,
                 "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 512,
                 "sliding_window_pattern": 6, "use_bidirectional_attention": False, "vocab_size": 262144}


def _multimodal(**text):
    """A Gemma 3 4B+ config.json: the text decoder's fields that differ from transformers'
    defaults under text_config, beside the vision tower's."""
    return {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
            "boi_token_index": 255999, "eoi_token_index": 256000, "eos_token_id": [1, 106],
            "image_token_index": 262144, "mm_tokens_per_image": 256,
            "text_config": {"model_type": "gemma3_text", "sliding_window": 1024,
                            "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, **text},
            "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152,
                              "image_size": 896, "intermediate_size": 4304, "num_attention_heads": 16,
                              "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": False}}


# The published config.json of each named size (the values of the google/* repositories).
OFFICIAL = {
    gemma_2b: dict(_GEMMA, hidden_size=2048, intermediate_size=16384, num_attention_heads=8,
                   num_hidden_layers=18, num_key_value_heads=1),
    gemma_7b: dict(_GEMMA, hidden_size=3072, intermediate_size=24576, num_attention_heads=16,
                   num_hidden_layers=28, num_key_value_heads=16),
    gemma2_2b: dict(_GEMMA2, hidden_size=2304, intermediate_size=9216, num_attention_heads=8,
                    num_hidden_layers=26, num_key_value_heads=4),
    gemma2_9b: dict(_GEMMA2, hidden_size=3584, intermediate_size=14336, num_attention_heads=16,
                    num_hidden_layers=42, num_key_value_heads=8),
    gemma2_27b: dict(_GEMMA2, head_dim=128, hidden_size=4608, intermediate_size=36864,
                     num_attention_heads=32, num_hidden_layers=46, num_key_value_heads=16,
                     query_pre_attn_scalar=144),
    gemma3_270m: dict(_GEMMA3_SMALL, hidden_size=640, intermediate_size=2048, num_attention_heads=4,
                      num_hidden_layers=18, num_key_value_heads=1),
    gemma3_1b: dict(_GEMMA3_SMALL, hidden_size=1152, intermediate_size=6912, num_attention_heads=4,
                    num_hidden_layers=26, num_key_value_heads=1),
    gemma3_4b: _multimodal(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34),
    gemma3_12b: _multimodal(hidden_size=3840, intermediate_size=15360, num_attention_heads=16,
                            num_hidden_layers=48, num_key_value_heads=8),
    gemma3_27b: _multimodal(head_dim=128, hidden_size=5376, intermediate_size=21504,
                            num_attention_heads=32, num_hidden_layers=62, num_key_value_heads=16,
                            query_pre_attn_scalar=168),
}


def _transformers_text_model(config):
    """transformers' causal LM of a config.json (the text decoder of a multimodal one)."""
    if "text_config" in config:
        return transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**config["text_config"]))
    return transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(**{k: v for k, v in config.items() if k != "architectures"}))


@pytest.mark.parametrize("builder", list(OFFICIAL), ids=lambda b: b.__name__)
def test_named_sizes_are_the_published_configs(builder):
    config = OFFICIAL[builder]
    ours = builder.describe()
    theirs = description_from_hf_config(config)
    assert differences(ours, theirs) == [], differences(ours, theirs)
    with torch.device("meta"):
        count = sum(p.numel() for p in builder().parameters())
        reference = sum(p.numel() for p in _transformers_text_model(config).parameters())
    print(f"{builder.__name__}: {count:,} parameters")
    assert count == reference


def test_the_sizes_differ_where_the_releases_do():
    """What the table in _gemma_description says, on the named sizes."""
    g2, g3_small, g3_large = gemma2_2b.describe(), gemma3_1b.describe(), gemma3_27b.describe()
    assert [layer.attention.sliding_window for layer in g2.layers[:3]] == [4096, None, 4096]
    assert g2.final_softcap == 30.0 and {layer.attention.softcap for layer in g2.layers} == {50.0}
    kinds = [layer.attention.sliding_window is not None for layer in g3_small.layers]
    assert kinds[:12] == [True] * 5 + [False] + [True] * 5 + [False]
    assert g3_small.final_softcap is None and {layer.attention.softcap for layer in g3_small.layers} == {None}
    ropes = {layer.attention.sliding_window: layer.attention.rope for layer in g3_large.layers}
    assert ropes[1024].base == 10_000 and ropes[1024].scaling is None
    assert ropes[None].base == 1_000_000 and ropes[None].scaling.factor == 8.0
    assert g3_large.layers[0].attention.scale == 168 ** -0.5
    assert gemma_7b.describe().embed_scale == 3072 ** 0.5


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_activation="gelu"), r"hidden_activation 'gelu' is not implemented for Gemma2ForCausalLM"),
    (dict(use_bidirectional_attention=True), r"use_bidirectional_attention true is not implemented"),
    (dict(attention_bias=True), r"attention_bias true is not implemented for Gemma2ForCausalLM"),
    (dict(partial_rotary_factor=0.5), r"partial_rotary_factor is not implemented for Gemma2ForCausalLM"),
])
def test_what_gemma_does_not_implement_is_one_line(changes, message):
    with pytest.raises(UserValueError, match=message) as err:
        description_from_hf_config({**OFFICIAL[gemma2_2b], **changes})
    assert "\n" not in str(err.value)


def test_gemma3_attention_softcap_is_refused_not_guessed():
    # transformers' Gemma 3 attention never applies it; reading it would change the math.
    with pytest.raises(UserValueError, match="attn_logit_softcapping is not implemented for Gemma3ForCausalLM"):
        description_from_hf_config({**OFFICIAL[gemma3_1b], "attn_logit_softcapping": 50.0})


def test_lora_twin_takes_no_output_adapter():
    with pytest.raises(TypeError, match="apply_lora_to_output"):
        lora_gemma_2b(["q_proj"], apply_lora_to_output=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``name -> (folder, transformers model)`` of the tiny Gemma 2 and 3 rows."""
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


@pytest.mark.parametrize("name", ["gemma2", "gemma3"])
def test_gradients_equal_transformers(name, tiny, tmp_path):
    """The loss and every parameter's gradient, transformers' gradients mapped through the
    same key map as the weights (so q/k rows and q/k norm scales are compared in our
    order). fp32, 2 layers of width 48: rounding is ~1e-6 of the largest gradient."""
    folder, hf = tiny(name)
    ours, _ = _ours(folder, tmp_path)
    tokens = torch.randint(0, ours.tok_embeddings.num_embeddings, (2, 40), generator=torch.Generator().manual_seed(2))
    hf.train()
    loss_theirs = hf(tokens, labels=tokens).loss
    loss_theirs.backward()
    logits = ours(tokens)
    loss_ours = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    loss_ours.backward()
    torch.testing.assert_close(loss_ours, loss_theirs, atol=1e-6, rtol=0)
    config = json.loads((folder / "config.json").read_text())
    converter = get_converter(ModelType.GEMMA2 if name == "gemma2" else ModelType.GEMMA3)
    grads = converter.hf_to_tune(
        {k: p.grad for k, p in hf.named_parameters() if k != "lm_head.weight"},
        num_heads=config["num_attention_heads"], num_kv_heads=config["num_key_value_heads"],
        dim=config["hidden_size"], head_dim=config["head_dim"])
    ours_grads = dict(ours.named_parameters())
    assert set(grads) == set(ours_grads)
    for key, grad in grads.items():
        scale = float(grad.abs().max())
        torch.testing.assert_close(ours_grads[key].grad, grad, atol=1e-5 * max(scale, 1e-3), rtol=0, msg=key)


def test_fused_loss_applies_the_final_softcap(tiny, tmp_path):
    """Gemma 2's final soft-cap through the fused loss (which skips the model's output
    layer and applies the tied projection itself) gives transformers' loss."""
    folder, hf = tiny("gemma2")
    hf = copy.deepcopy(hf)
    ours, _ = _ours(folder, tmp_path)
    tokens = torch.randint(0, ours.tok_embeddings.num_embeddings, (2, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # Logits of a few units, so the cap (3.0) bites: the tied embedding scaled in both.
        hf.model.embed_tokens.weight.mul_(100.0)
        ours.tok_embeddings.weight.mul_(100.0)
        expected = hf.eval()(tokens, labels=tokens).loss
        fused = LinearCrossEntropyLoss(num_output_chunks=4, min_chunk_size=1)
        fused.set_model_output(ours)
        total, count = fused(ours.eval()(tokens), tokens)  # it shifts the labels itself
        uncapped = torch.nn.functional.cross_entropy(
            ours.output(ours(tokens))[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
    assert abs(float(uncapped - expected)) > 0.1  # the cap (3.0) bites on these logits
    torch.testing.assert_close(total / count, expected, atol=1e-5, rtol=0)


def _tiny_multimodal(folder):
    torch.manual_seed(0)
    text = dict(ROWS["gemma3"].config, vocab_size=300)
    config = transformers.Gemma3Config(
        text_config=text, mm_tokens_per_image=4,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=28, patch_size=14),
    )
    model = transformers.Gemma3ForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    return model


def test_multimodal_checkpoint_trains_the_text_decoder_and_carries_the_rest(tmp_path, caplog):
    """A Gemma 3 4B-style folder (Gemma3ForConditionalGeneration: vision tower and projector
    beside the language model): the checkpointer reads the text decoder, whose logits on
    text equal transformers' multimodal model; a save writes the changed decoder and every
    other tensor unchanged, and transformers loads the output folder as the same class."""
    from safetensors.torch import load_file

    folder = tmp_path / "gemma-3-mm"
    hf = _tiny_multimodal(folder)
    with caplog.at_level(logging.INFO):
        ours, ckpt = _ours(folder, tmp_path)
    assert "multimodal checkpoint" in caplog.text and "carried through unchanged" in caplog.text
    tokens = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(tokens), hf(input_ids=tokens).logits, atol=1e-5, rtol=0)
        ours.layers[0].attn.q_proj.weight.add_(0.5)  # "training"
    ckpt.save_checkpoint({"model": ours.state_dict()}, epoch=0)
    out = tmp_path / "out" / "epoch_0"
    before, after = load_file(str(folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["language_model.model.layers.0.self_attn.q_proj.weight"]
    back = transformers.Gemma3ForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), back(input_ids=tokens).logits, atol=1e-5, rtol=0)


def test_multimodal_lora_adapter_loads_in_peft_on_the_multimodal_model(tmp_path):
    """A LoRA fine-tune of the text decoder of a multimodal checkpoint: the merged save and
    the peft adapter (on transformers' text decoder module, not on the vision tower's own
    q_proj/v_proj) over the input folder give the same logits."""
    from peft import PeftModel

    from torchtune.models import lora_auto_model
    from torchtune.modules.peft import get_adapter_params, get_merged_lora_ckpt
    from torchtune.modules.peft.peft_utils import get_lora_adapter_config

    folder = tmp_path / "gemma-3-mm"
    _tiny_multimodal(folder)
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))
    model = lora_auto_model(str(folder), ["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=4, lora_alpha=8)
    model.load_state_dict(ckpt.load_checkpoint()["model"], strict=False)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in get_adapter_params(model).items():
            p.normal_(0, 0.2)
    config = get_lora_adapter_config(model)
    merged = get_merged_lora_ckpt({k: v.detach() for k, v in model.state_dict().items()}, rank=4, alpha=8)
    adapter = {k: v.detach() for k, v in get_adapter_params(model).items()}
    ckpt.save_checkpoint({"model": merged, "adapter": adapter, "adapter_config": config}, epoch=0)
    out = tmp_path / "out"
    peft_config = json.loads((out / "adapter_0_peft" / "adapter_config.json").read_text())
    assert peft_config["target_modules"].startswith("^model\\.language_model\\.")
    tokens = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(6))
    base = transformers.Gemma3ForConditionalGeneration.from_pretrained(folder).eval()
    merged_hf = transformers.Gemma3ForConditionalGeneration.from_pretrained(out / "epoch_0").eval()
    with torch.no_grad():
        before, expected = base(input_ids=tokens).logits, merged_hf(input_ids=tokens).logits
    assert not torch.allclose(expected, before, atol=1e-3)  # the adapter acts
    adapted = PeftModel.from_pretrained(base, str(out / "adapter_0_peft")).eval()
    wrapped = {n for n, m in adapted.named_modules() if hasattr(m, "lora_A")}
    assert wrapped and all(".language_model." in n for n in wrapped)
    with torch.no_grad():
        torch.testing.assert_close(adapted(input_ids=tokens).logits, expected, atol=1e-5, rtol=0)
