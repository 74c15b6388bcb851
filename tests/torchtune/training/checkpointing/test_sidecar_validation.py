"""config.json, params.json, index json, .tune_download.json and the checkpointer's own
arguments are checked when the checkpointer is built, with one line naming file and key
(issue 14, items 6, 7 and 9)."""

import json
import os

import pytest
import torch

from torchtune import UserFileNotFoundError, UserValueError
from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
)


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("change,key", [
    ({"head_dim": 10**9}, "'head_dim' must be between 1 and 32, got 1000000000"),
    ({"head_dim": -4}, "'head_dim' must be between 1 and 32, got -4"),
    ({"head_dim": 7}, "head_dim is 7; rotary embeddings need an even head_dim"),
    ({"hidden_size": "32"}, "'hidden_size' must be an integer, got '32' (str)"),
    ({"num_attention_heads": True}, "'num_attention_heads' must be an integer, got True (bool)"),
    ({"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of num_key_value_heads 3"),
    ({"num_attention_heads": 5}, "hidden_size 32 is not divisible by num_attention_heads 5"),
    ({"vocab_size": 10**12}, "'vocab_size' must be between 1 and 16777216"),
    ({"num_attention_heads": None}, "lacks 'num_attention_heads'"),
    ({"model_type": 3}, "'model_type' must be a string"),
])
def test_bad_config_json_values_are_named(tmp_path, tiny, change, key):
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 1, index=False)
    (tmp_path / "config.json").write_text(json.dumps(dict(tiny.hf_config(), **change)))
    with pytest.raises(UserValueError) as err:
        FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
    assert f"config.json {tmp_path / 'config.json'}" in _one_line(err) and key in str(err.value)
    # The TorchTune checkpointer reads a config.json beside its weights just as early.
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    with pytest.raises(UserValueError, match="config.json"):
        FullModelTorchTuneCheckpointer(str(tmp_path), ["m.pt"], "LLAMA2", str(tmp_path / "out"))


@pytest.mark.parametrize("change,key", [
    ({"n_heads": "4"}, "'n_heads' must be an integer, got '4' (str)"),
    ({"dim": 33}, "dim 33 is not divisible by n_heads 4"),
    ({"n_kv_heads": 3}, "n_heads 4 is not a multiple of n_kv_heads 3"),
    ({"n_layers": False}, "'n_layers' must be an integer, got False (bool)"),
    ({"dim": 2**40}, "'dim' must be between 1 and 16777216"),
])
def test_bad_params_json_values_are_named(tmp_path, tiny, change, key):
    tiny.write_meta(tmp_path)
    params = json.loads((tmp_path / "params.json").read_text())
    (tmp_path / "params.json").write_text(json.dumps(dict(params, **change)))
    with pytest.raises(UserValueError) as err:
        FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path / "out"))
    assert f"params.json {tmp_path / 'params.json'}" in _one_line(err) and key in str(err.value)


def test_meta_params_json_with_vocab_size_minus_one_is_fine(tmp_path, tiny):
    tiny.write_meta(tmp_path)  # Meta's own params.json says vocab_size -1
    params = json.loads((tmp_path / "params.json").read_text())
    (tmp_path / "params.json").write_text(json.dumps(dict(params, vocab_size=-1, n_kv_heads=None)))
    FullModelMetaCheckpointer(str(tmp_path), ["consolidated.00.pth"], "LLAMA2", str(tmp_path / "out"))


@pytest.mark.parametrize("listed", ["index", "shards"])
@pytest.mark.parametrize("entry", ["../outside.safetensors", "/etc/outside.safetensors", "sub/../../x.safetensors"])
def test_index_may_only_name_files_inside_checkpoint_dir(tmp_path, tiny, listed, entry):
    names, _, weight_map = tiny.write_hf(tmp_path / "ckpt", "safetensors", 2, index=True)
    index_path = tmp_path / "ckpt" / "model.safetensors.index.json"
    key = next(iter(weight_map))
    index = json.loads(index_path.read_text())
    index["weight_map"][key] = entry
    index_path.write_text(json.dumps(index))
    files = ["model.safetensors.index.json"] if listed == "index" else names
    with pytest.raises(UserValueError) as err:
        FullModelHFCheckpointer(str(tmp_path / "ckpt"), files, "LLAMA2", str(tmp_path / "out"))
    assert f"Index file {index_path}: weight_map[{key!r}] = {entry!r} points outside" in _one_line(err)


@pytest.mark.parametrize("index,problem", [
    ({"weight_map": []}, "has no 'weight_map' object"),
    ({"weight_map": {"model.norm.weight": 3}}, "weight_map['model.norm.weight'] must be a shard file name, got 3"),
    ({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}, "metadata": [1]}, "'metadata' must be an object"),
])
def test_malformed_index_is_named(tmp_path, tiny, index, problem):
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 2, index=True)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UserValueError) as err:
        FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
    assert problem in _one_line(err) and "model.safetensors.index.json" in str(err.value)


@pytest.mark.parametrize("record,problem", [
    ("not json", "Could not parse download record"),
    ('["meta-llama/Llama-2-7b-hf"]', "holds a JSON list, not an object"),
    ('{"repo_id": "meta-llama/Llama-2-7b-hf"}', "'revision' must be a non-empty string, got None"),
    ('{"repo_id": 7, "revision": "abc"}', "'repo_id' must be a non-empty string, got 7"),
])
@pytest.mark.parametrize("fmt", ["hf", "meta"])
def test_malformed_download_record_fails_at_build_not_at_save(tmp_path, tiny, record, problem, fmt):
    if fmt == "hf":
        names, _, _ = tiny.write_hf(tmp_path, "safetensors", 1, index=False)
        cls = FullModelHFCheckpointer
    else:
        tiny.write_meta(tmp_path)
        names, cls = ["consolidated.00.pth"], FullModelMetaCheckpointer
    (tmp_path / ".tune_download.json").write_text(record)
    with pytest.raises(UserValueError) as err:
        cls(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
    assert problem in _one_line(err) and str(tmp_path / ".tune_download.json") in str(err.value)


def test_sidecars_are_not_read_again_at_save_time(tmp_path, tiny):
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 2, index=True)
    (tmp_path / ".tune_download.json").write_text(json.dumps({"repo_id": "org/m", "revision": "abc"}))
    ckpt = FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
    state = {"model": ckpt.load_checkpoint()["model"], "adapter": tiny.adapter(), "adapter_config": {"lora_alpha": 4}}
    for name in ("model.safetensors.index.json", ".tune_download.json"):
        (tmp_path / name).write_text("broken after the checkpointer was built")
    ckpt.save_checkpoint(state, epoch=0)
    peft = json.loads((tmp_path / "out" / "adapter_0_peft" / "adapter_config.json").read_text())
    assert (peft["base_model_name_or_path"], peft["revision"]) == ("org/m", "abc")
    index = json.loads((tmp_path / "out" / "epoch_0" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(names)


@pytest.mark.parametrize("kwargs,problem", [
    ({"keep_last_n_checkpoints": 0}, "keep_last_n_checkpoints must be None or >= 1, got 0"),
    ({"keep_last_n_checkpoints": "2"}, "keep_last_n_checkpoints must be None or >= 1, got '2'"),
    ({"keep_last_n_checkpoints": True}, "keep_last_n_checkpoints must be None or >= 1, got True"),
    ({"checkpoint_files": []}, "checkpoint_files is empty"),
    ({"checkpoint_files": [3]}, "checkpoint_files must hold file names, got 3"),
    ({"checkpoint_files": 3}, "checkpoint_files must be a list of file names, got 3"),
    ({"model_type": "GPT2"}, "Unknown model_type 'GPT2'"),
    ({"output_dir": None}, "checkpointer.output_dir must be a folder path, got None"),
    ({"resume_from_checkpoint": True}, "checkpointer.recipe_checkpoint is not set"),
    ({"checkpoint_files": ["m.pt", "m.pt"]}, "checkpoint_files lists m.pt more than once"),
])
def test_bad_checkpointer_arguments_are_user_errors(tmp_path, tiny, kwargs, problem):
    torch.save(tiny.tune_sd(), tmp_path / "m.pt")
    args = dict(checkpoint_dir=str(tmp_path), checkpoint_files=["m.pt"], model_type="LLAMA2",
                output_dir=str(tmp_path / "out"))
    args.update(kwargs)
    with pytest.raises(UserValueError) as err:
        FullModelMetaCheckpointer(**args)
    assert problem in _one_line(err)


def test_missing_files_are_user_errors(tmp_path, tiny):
    with pytest.raises(UserFileNotFoundError, match=r"checkpoint file .*nope\.pt not found"):
        FullModelTorchTuneCheckpointer(str(tmp_path), ["nope.pt"], "LLAMA2", str(tmp_path))
    names, _, _ = tiny.write_hf(tmp_path / "hf", "safetensors", 1, index=False)
    os.remove(tmp_path / "hf" / "config.json")
    with pytest.raises(UserFileNotFoundError, match=r"config\.json .*not found"):
        FullModelHFCheckpointer(str(tmp_path / "hf"), names, "LLAMA2", str(tmp_path))
