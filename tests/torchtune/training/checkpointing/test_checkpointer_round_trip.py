"""Round trips through the checkpointers are bit exact, and the HF output loads in transformers."""

import json

import pytest
import torch
from safetensors import safe_open

from torchtune.training.checkpointing import (
    FullModelHFCheckpointer,
    FullModelMetaCheckpointer,
    FullModelTorchTuneCheckpointer,
    ModelType,
)


def _read(path):
    if path.endswith(".safetensors"):
        with safe_open(path, "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    return torch.load(path, weights_only=True), None


def _assert_bit_equal(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)), k


def test_meta_round_trip_bit_exact(tmp_path, tiny):
    meta = tiny.write_meta(tmp_path / "in")
    ckpt = FullModelMetaCheckpointer(
        checkpoint_dir=str(tmp_path / "in"),
        checkpoint_files=["consolidated.00.pth"],
        model_type="LLAMA2",
        output_dir=str(tmp_path / "out"),
    )
    loaded = ckpt.load_checkpoint()
    assert set(loaded) == {"model"}
    _assert_bit_equal(loaded["model"], tiny.tune_sd(0))
    ckpt.save_checkpoint(loaded, epoch=0)

    out = torch.load(tmp_path / "out" / "meta_model_0.pt", weights_only=True)
    _assert_bit_equal(out, meta)  # rope.freqs is recomputed by every consumer, so dropped
    # llama.cpp's converter wants params.json and tokenizer.model beside the weights.
    for name in ("params.json", "tokenizer.model"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "in" / name).read_bytes()
    assert not (tmp_path / "out" / "recipe_state.pt").exists()


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
@pytest.mark.parametrize("n_shards,index", [(1, False), (1, True), (2, True), (2, False)])
def test_hf_round_trip_bit_exact(tmp_path, tiny, fmt, n_shards, index):
    names, hf, weight_map = tiny.write_hf(tmp_path / "in", fmt, n_shards, index)
    ckpt = FullModelHFCheckpointer(
        checkpoint_dir=str(tmp_path / "in"),
        checkpoint_files=names,
        model_type=ModelType.LLAMA2,
        output_dir=str(tmp_path / "out"),
    )
    loaded = ckpt.load_checkpoint()
    _assert_bit_equal(loaded["model"], tiny.tune_sd(0))
    ckpt.save_checkpoint(loaded, epoch=3)

    out_dir = tmp_path / "out" / "epoch_3"
    for name in names:
        got, metadata = _read(str(out_dir / name))
        expected, expected_metadata = _read(str(tmp_path / "in" / name))
        _assert_bit_equal(got, expected)  # same tensors in the same shard, bit for bit
        assert metadata == expected_metadata
    index_names = sorted(p.name for p in out_dir.glob("*.index.json"))
    assert index_names == ([f"{'model.safetensors' if fmt == 'safetensors' else 'pytorch_model.bin'}"
                            ".index.json"] if (index or n_shards > 1) else [])
    if index_names:
        index_json = json.loads((out_dir / index_names[0]).read_text())
        assert index_json["weight_map"] == weight_map
        assert index_json["metadata"]["total_size"] == sum(v.numel() * 4 for v in hf.values())
    for extra in ("config.json", "tokenizer_config.json"):
        assert (out_dir / extra).read_bytes() == (tmp_path / "in" / extra).read_bytes()


def test_hf_index_listed_in_checkpoint_files_expands_to_its_shards(tmp_path, tiny):
    tiny.write_hf(tmp_path, "safetensors", 2, True)
    ckpt = FullModelHFCheckpointer(str(tmp_path), ["model.safetensors.index.json"], "LLAMA2", str(tmp_path))
    _assert_bit_equal(ckpt.load_checkpoint()["model"], tiny.tune_sd(0))


def test_torchtune_round_trip_bit_exact(tmp_path, tiny):
    sd = tiny.tune_sd(0, dtype=torch.bfloat16)
    torch.save(sd, tmp_path / "model.pt")
    ckpt = FullModelTorchTuneCheckpointer(str(tmp_path), ["model.pt"], "llama2", str(tmp_path / "out"))
    loaded = ckpt.load_checkpoint()
    _assert_bit_equal(loaded["model"], sd)
    ckpt.save_checkpoint(loaded, epoch=1)
    _assert_bit_equal(torch.load(tmp_path / "out" / "torchtune_model_1.pt", weights_only=True), sd)


@pytest.mark.parametrize("fmt,n_shards", [("bin", 2), ("safetensors", 1)])
def test_transformers_loads_hf_output_with_same_logits(tmp_path, tiny, fmt, n_shards):
    transformers = pytest.importorskip("transformers")
    names, _, _ = tiny.write_hf(tmp_path / "in", fmt, n_shards, index=True)
    ckpt = FullModelHFCheckpointer(str(tmp_path / "in"), names, "LLAMA2", str(tmp_path / "out"))
    sd = ckpt.load_checkpoint()
    # Change the weights so the output differs from the input the test wrote.
    sd["model"] = {k: v * 0.9 if "q_proj" in k else v for k, v in sd["model"].items()}
    ckpt.save_checkpoint(sd, epoch=0)

    ours = tiny.model()
    ours.load_state_dict(sd["model"], strict=True)
    hf_model = transformers.LlamaForCausalLM.from_pretrained(
        str(tmp_path / "out" / "epoch_0"), torch_dtype=torch.float32
    ).eval()
    tokens = torch.randint(0, tiny.cfg.vocab, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), hf_model(tokens).logits, atol=1e-5, rtol=1e-5)
