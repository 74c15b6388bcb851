"""Each loading fault gives one clear error naming the file, tensor or value at fault."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from torchtune import UserFileNotFoundError, UserValueError
from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
    ModelType,
    check_resume_matches,
    validate_state_dict,
)


def test_missing_checkpoint_file_lists_the_folder(tmp_path, tiny):
    tiny.write_meta(tmp_path)
    with pytest.raises(UserFileNotFoundError, match=r"consolidated\.01\.pth not found.*consolidated\.00\.pth, params\.json, tokenizer\.model"):
        FullModelMetaCheckpointer(str(tmp_path), ["consolidated.01.pth"], "LLAMA2", str(tmp_path))


def test_missing_hf_shard_and_missing_config(tmp_path, tiny):
    names, _, _ = tiny.write_hf(tmp_path, "bin", 2, index=False)
    with pytest.raises(UserFileNotFoundError, match=r"pytorch_model-00003-of-00003\.bin not found"):
        FullModelHFCheckpointer(str(tmp_path), names + ["pytorch_model-00003-of-00003.bin"], "LLAMA2", str(tmp_path))
    os.remove(tmp_path / "config.json")
    with pytest.raises(UserFileNotFoundError, match=r"config\.json .*not found"):
        FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path))


def test_index_naming_unlisted_shard_is_an_error(tmp_path, tiny):
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 2, index=True)
    with pytest.raises(UserValueError, match=r"model\.safetensors\.index\.json maps tensors to \['model-00002-of-00002\.safetensors'\]"):
        FullModelHFCheckpointer(str(tmp_path), names[:1], "LLAMA2", str(tmp_path))


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_truncated_file_names_the_file(tmp_path, tiny, fmt):
    names, _, _ = tiny.write_hf(tmp_path, fmt, 2, index=False)
    path = tmp_path / names[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ckpt = FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path))
    with pytest.raises(UserValueError, match=rf"Could not read .*{names[1]}.*truncated or corrupt"):
        ckpt.load_checkpoint()


def test_pickled_code_is_refused(tmp_path):
    torch.save({"x": torch.zeros(1), "obj": os.path.join}, tmp_path / "evil.pt")
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["evil.pt"], "LLAMA2", str(tmp_path))
    with pytest.raises(UserValueError, match=r"Refusing to load .*evil\.pt"):
        ckpt.load_checkpoint()


def test_weights_of_another_model_type_are_named(tmp_path, tiny):
    gpt2 = {"transformer.wte.weight": torch.zeros(4, 2), "transformer.h.0.attn.c_attn.weight": torch.zeros(2, 6)}
    torch.save(gpt2, tmp_path / "consolidated.00.pth")
    ckpt = FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path))
    with pytest.raises(UserValueError, match=r"consolidated\.00\.pth does not match model_type LLAMA2.*'transformer\.wte\.weight'"):
        ckpt.load_checkpoint()

    # HF: the config.json says so before any weight is read.
    hf_dir = tmp_path / "hf"
    names, _, _ = tiny.write_hf(hf_dir, "safetensors", 1, index=False)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
    with pytest.raises(UserValueError, match=r"config\.json has model_type 'gpt2'.*LLAMA2"):
        FullModelHFCheckpointer(str(hf_dir), names, "LLAMA2", str(hf_dir))

    # ... and a Llama config over non-Llama tensors is caught by the key map.
    (hf_dir / "config.json").write_text(json.dumps(config))
    save_file({"model.layers.0.attn.c_attn.weight": torch.zeros(2, 2)}, str(hf_dir / names[0]))
    ckpt = FullModelHFCheckpointer(str(hf_dir), names, "LLAMA2", str(hf_dir))
    with pytest.raises(UserValueError, match=r"does not match model_type LLAMA2.*'model\.layers\.0\.attn\.c_attn\.weight'"):
        ckpt.load_checkpoint()


def test_unknown_model_type_string():
    assert ModelType.coerce("LLAMA2") is ModelType.LLAMA2 is ModelType.coerce("llama2")
    assert ModelType.coerce("llama3_2") is ModelType.LLAMA3_2
    with pytest.raises(UserValueError, match=r"Unknown model_type 'FALCON'.*LLAMA2.*LLAMA3_2"):
        ModelType.coerce("FALCON")


def test_validate_state_dict_names_unexpected_missing_and_shapes(tiny):
    model = tiny.model()
    sd = dict(model.state_dict())
    validate_state_dict(model, sd)  # fits: no error

    bad = dict(sd)
    bad.pop("layers.1.mlp.w3.weight")
    bad["layers.9.attn.q_proj.weight"] = torch.zeros(1)
    bad["layers.0.attn.k_proj.weight"] = torch.zeros(32, 32)
    with pytest.raises(UserValueError) as err:
        validate_state_dict(model, bad)
    msg = str(err.value)
    assert "unexpected tensors [layers.9.attn.q_proj.weight]" in msg
    assert "missing tensors [layers.1.mlp.w3.weight]" in msg
    assert "layers.0.attn.k_proj.weight: checkpoint (32, 32) vs model (16, 32)" in msg
    assert "\n" not in msg

    # A LoRA model takes a base checkpoint with only the adapter missing.
    lora = tiny.model(lora=True, lora_attn_modules=["q_proj"], lora_rank=2, lora_alpha=4.0)
    validate_state_dict(lora, sd, ignore_missing=lambda k: "lora_" in k)
    with pytest.raises(UserValueError, match=r"missing tensors \[layers\.0\.attn\.q_proj\.lora_a\.weight"):
        validate_state_dict(lora, sd)


def test_resume_without_recipe_checkpoint(tmp_path, tiny):
    tiny.write_meta(tmp_path)
    with pytest.raises(UserValueError, match=r"resume_from_checkpoint is True but checkpointer\.recipe_checkpoint is not set"):
        FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path),
                                  resume_from_checkpoint=True)
    # Found missing when the checkpointer is built, before any model is read.
    with pytest.raises(UserFileNotFoundError, match=r"recipe checkpoint .*recipe_state\.pt not found; files in .*consolidated\.00\.pth"):
        FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path),
                                  recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True)


def test_check_resume_matches():
    saved = {"seed": 1, "total_epochs": 3, "batch_size": 4}
    check_resume_matches(saved, {"seed": 1, "total_epochs": 3})
    with pytest.raises(UserValueError, match=r"config total_epochs=5 but recipe_state\.pt has total_epochs=3"):
        check_resume_matches(saved, {"seed": 1, "total_epochs": 5})
    with pytest.raises(UserValueError, match=r"config batch_size=8 but recipe_state\.pt has batch_size=4"):
        check_resume_matches(saved, {"batch_size": 8})
    with pytest.raises(UserValueError, match=r"has no 'gradient_accumulation_steps'"):
        check_resume_matches(saved, {"gradient_accumulation_steps": 2})
