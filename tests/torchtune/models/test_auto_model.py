"""``auto_model`` builds every implemented architecture from its folder alone, equal to
transformers; the HF checkpointer reads the same folder with no model_type or file list, and
refuses a named builder whose math differs from the folder's config.json."""

import json

import pytest
import torch

from hf_folders import ARCHITECTURES, folder_factory, ROWS
from torchtune._errors import UserValueError
from torchtune.models import auto_model, lora_auto_model
from torchtune.models._auto import ARCHITECTURES as OURS, description_from_hf_config
from torchtune.models._description import differences
from torchtune.training import check_attention_layout
from torchtune.utils import FullModelHFCheckpointer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def make_folder(tmp_path_factory):
    return folder_factory(tmp_path_factory)


def _load(folder, tmp_path, model=None):
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path / "out"))
    model = model or auto_model(str(folder))
    check_attention_layout(model, ckpt.model_layout)
    model.load_state_dict(ckpt.load_checkpoint()["model"])
    return model.eval(), ckpt


@pytest.mark.parametrize("row", [r.name for r in ARCHITECTURES])
def test_built_from_the_folder_equals_transformers(row, make_folder, tmp_path, assert_decoding_equals_full_forward):
    folder = make_folder(row)
    model, _ = _load(folder, tmp_path)
    hf = getattr(transformers, ROWS[row].model_class).from_pretrained(folder).float().eval()
    tokens = torch.randint(0, model.tok_embeddings.num_embeddings, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(tokens), hf(tokens).logits
    # Two fp32 layers of width 48 with O(1) logits: rounding is ~1e-6; a wrong RoPE base,
    # scaling, bias or tying is off by 1e-2 or more.
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert_decoding_equals_full_forward(model, tokens[:1, :24], prefill=8)


def test_lora_auto_model_starts_as_the_base_and_adapts_what_it_is_asked(make_folder, tmp_path):
    folder = make_folder("qwen3")
    base, _ = _load(folder, tmp_path)
    lora = lora_auto_model(str(folder), ["q_proj", "v_proj"], apply_lora_to_mlp=True, lora_rank=4, lora_alpha=8)
    missing, unexpected = lora.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all("lora_" in k for k in missing)
    tokens = torch.arange(30)[None]
    with torch.no_grad():
        torch.testing.assert_close(lora.eval()(tokens), base(tokens), atol=0, rtol=0)  # lora_b starts at zero
    assert lora.description == base.description
    adapted = {n.rsplit(".", 2)[0] for n, _ in lora.named_parameters() if "lora_a" in n}
    assert {a.split(".")[-1] for a in adapted} == {"q_proj", "v_proj", "w1", "w2", "w3"}


def test_defaults_are_transformers_defaults():
    # save_pretrained may leave out a field at its default: ours must be transformers'.
    for arch in OURS.values():
        config = transformers.AutoConfig.for_model(arch.model_types[0])
        for key, value in arch.defaults.items():
            theirs = getattr(config, key, None)
            if key == "rope_theta":
                theirs = config.rope_parameters["rope_theta"]
            if key == "sliding_window" and theirs is None:
                continue  # transformers clears it when use_sliding_window is false
            assert theirs == value, (arch.name, key, theirs, value)


def test_checkpointer_infers_model_type_and_files(make_folder, tmp_path):
    ckpt = FullModelHFCheckpointer(str(make_folder("llama")), output_dir=str(tmp_path / "o"))
    assert ckpt.model_layout["tied"] is True
    assert ckpt.model_layout["description"].layers[0].attention.rope.base == 100_000.0
    untied = FullModelHFCheckpointer(str(make_folder("qwen3")), output_dir=str(tmp_path / "o2"))
    assert untied.model_layout["tied"] is False


def test_named_builder_with_other_math_is_refused(make_folder, tmp_path):
    # The case: a Llama folder with rope theta 100,000 and no scaling loaded into
    # llama3_2 (factor-32 scaling, base 500,000) used to load silently and compute other logits.
    from torchtune.models.llama3_2 import llama3_2

    folder = make_folder("llama")
    config = json.loads((folder / "config.json").read_text())
    named = llama3_2(
        vocab_size=config["vocab_size"], num_layers=2, num_heads=6, num_kv_heads=2, embed_dim=48,
        max_seq_len=256, intermediate_dim=96, norm_eps=1e-5,
    )
    with pytest.raises(UserValueError, match=r"layers\[0\]\.attention\.rope\.base = 500000, but config.json .* says 100000.0 \(rope_theta\) \(and \d+ more differences\); build the model from the folder"):
        _load(folder, tmp_path, named)
    same = llama3_2(
        vocab_size=config["vocab_size"], num_layers=2, num_heads=6, num_kv_heads=2, embed_dim=48,
        max_seq_len=256, intermediate_dim=96, norm_eps=1e-5, rope_base=100_000,
    )
    with pytest.raises(UserValueError, match=r"rope\.scaling = Llama3RopeScaling.* says None \(rope_scaling\)"):
        _load(folder, tmp_path, same)


def _config(**changes):
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 64,
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 4}
    return {**base, **changes}


@pytest.mark.parametrize("changes, message", [
    (dict(architectures=["GPTNeoXForCausalLM"]), r"architectures \['GPTNeoXForCausalLM'\] is not an architecture torchtune implements; supported: \['Gemma2ForCausalLM', .*'LlamaForCausalLM', .*'Qwen3ForCausalLM'.*\]"),
    (dict(hidden_act="gelu"), r"hidden_act 'gelu' is not implemented for LlamaForCausalLM; supported: \['silu', 'swish'\]"),
    (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), r"rope_type 'dynamic' is not supported; supported: default, linear, llama3, yarn"),
    (dict(logit_scale=0.5), r"field 'logit_scale' is not one torchtune reads for LlamaForCausalLM, so the model might compute something else; if it does not change the model's math, pass ignore_fields=\['logit_scale'\]"),
    (dict(partial_rotary_factor=0.5),
     r"partial_rotary_factor 0.5 is not implemented for LlamaForCausalLM; supported: 1.0"),
    (dict(num_key_value_heads=3), r"num_kv_heads \(3\) must divide num_heads \(4\)"),
    # Phi-3 / Phi-4-mini 128k: LongRoPE is not implemented, and is never ignored.
    (dict(architectures=["Phi3ForCausalLM"], model_type="phi3", original_max_position_embeddings=4096,
          rope_scaling={"type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4}),
     r"rope_type 'longrope' is not supported; supported: default, linear, llama3, yarn"),
])
def test_what_is_not_implemented_is_one_line(changes, message):
    with pytest.raises(UserValueError, match=message) as err:
        description_from_hf_config(_config(**changes))
    assert "\n" not in str(err.value)


def test_ids_and_provenance_are_not_math():
    """Fields a GGUF-converted folder (transformers' GGUF loader) writes."""
    plain = description_from_hf_config(_config())
    assert description_from_hf_config(_config(unk_token_id=0, _model_name_or_path="x.gguf")) == plain


def test_ignore_fields_and_windows():
    described = description_from_hf_config(_config(logit_scale=0.5), ignore_fields=["logit_scale"])
    assert described.num_layers == 1
    qwen = {**_config(num_hidden_layers=4), "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
            "use_sliding_window": True, "sliding_window": 16, "max_window_layers": 2}
    windows = [layer.attention.sliding_window for layer in description_from_hf_config(qwen).layers]
    assert windows == [None, None, 16, 16]  # transformers: layers from max_window_layers on
    typed = {**qwen, "layer_types": ["sliding_attention", "full_attention"] * 2}
    assert [l.attention.sliding_window for l in description_from_hf_config(typed).layers] == [16, None, 16, None]
    assert differences(description_from_hf_config(qwen), description_from_hf_config(typed))[0][0] == "layers[0].attention.sliding_window"
