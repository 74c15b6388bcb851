"""Meta-layout Llama 3.1 / 3.2 checkpoints: ``consolidated.NN.pth`` (one file or one per
model-parallel rank) + params.json + tokenizer.model, loaded and saved as Meta ships them."""

import os

import pytest
import torch

from torchtune._errors import UserValueError
from torchtune.training.checkpointing import FullModelMetaCheckpointer, FullModelTorchTuneCheckpointer

from llama3_ckpt_helpers import meta_state_dict, split_like_fairscale, write_meta_folder


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_tensors(got, want):
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


@pytest.mark.parametrize("tied,model_type", [(False, "LLAMA3"), (True, "LLAMA3_2")])
def test_single_file_round_trip_in_the_layout_meta_ships(tmp_path, tied, model_type):
    src = tmp_path / "Llama-3.2-1B" / "original"
    full = meta_state_dict(tied=tied)
    names = write_meta_folder(str(src), full)
    ckpt = FullModelMetaCheckpointer(str(src), names, model_type, str(tmp_path / "out"))
    model = ckpt.load_checkpoint()["model"]
    assert ("output.weight" in model) is not tied  # the internal tied layout has no output
    assert torch.equal(model["layers.1.attn.q_proj.weight"], full["layers.1.attention.wq.weight"])
    assert torch.equal(model["norm.scale"], full["norm.weight"])

    ckpt.save_checkpoint({"model": model}, epoch=0)
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["meta_model_0.pt", "params.json", "tokenizer.model"]
    assert_same_tensors(load(out / "meta_model_0.pt"), full)  # output.weight back for 3.2
    for name in ("params.json", "tokenizer.model"):
        assert (out / name).read_bytes() == (src / name).read_bytes()


def test_tied_meta_output_that_differs_is_refused(tmp_path):
    full = meta_state_dict(tied=True)
    full["output.weight"] = full["output.weight"] + 1
    names = write_meta_folder(str(tmp_path), full)
    ckpt = FullModelMetaCheckpointer(str(tmp_path), names, "LLAMA3_2", str(tmp_path / "out"))
    with pytest.raises(UserValueError, match="differs from the token embedding") as err:
        ckpt.load_checkpoint()
    assert "\n" not in str(err.value)


def test_tied_meta_without_output_is_saved_without_it(tmp_path):
    full = meta_state_dict(tied=True)
    del full["output.weight"]
    names = write_meta_folder(str(tmp_path / "in"), full)
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), names, "LLAMA3_2", str(tmp_path / "out"))
    ckpt.save_checkpoint(ckpt.load_checkpoint(), epoch=0)
    assert_same_tensors(load(tmp_path / "out" / "meta_model_0.pt"), full)


@pytest.mark.parametrize("n_ranks", [2, 4])
@pytest.mark.parametrize("tied,model_type", [(False, "LLAMA3"), (True, "LLAMA3_2")])
def test_model_parallel_files_join_and_split_back(tmp_path, n_ranks, tied, model_type):
    full = meta_state_dict(tied=tied, seed=n_ranks)
    src = tmp_path / "original"
    names = write_meta_folder(str(src), full, n_ranks)
    # Listed out of order on purpose: ranks are taken from the names.
    ckpt = FullModelMetaCheckpointer(str(src), names[::-1], model_type, str(tmp_path / "out"))
    model = ckpt.load_checkpoint()["model"]
    single = write_meta_folder(str(tmp_path / "single"), full, 1)
    reference = FullModelMetaCheckpointer(str(tmp_path / "single"), single, model_type,
                                          str(tmp_path / "o2")).load_checkpoint()["model"]
    assert_same_tensors(model, reference)

    ckpt.save_checkpoint({"model": model}, epoch=3, intermediate_checkpoint=True, **{})
    out = tmp_path / "out" / "meta_model_3"
    assert sorted(os.listdir(out)) == sorted(names + ["params.json", "tokenizer.model"])
    for name in names:  # the same split as the input, tensor for tensor, bit for bit
        assert_same_tensors(load(out / name), load(src / name))
        # Each slice is saved on its own, not as a view of the whole tensor.
        assert os.path.getsize(out / name) < os.path.getsize(tmp_path / "single" / "consolidated.00.pth")
    # The saved folder is itself a checkpoint this checkpointer (and Meta's loader) reads.
    again = FullModelMetaCheckpointer(str(out), names, model_type, str(tmp_path / "o3")).load_checkpoint()
    assert_same_tensors(again["model"], reference)


def test_model_parallel_step_save_and_resume(tmp_path):
    full = meta_state_dict(seed=5)
    names = write_meta_folder(str(tmp_path / "in"), full, 2)
    out = tmp_path / "out"
    ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), names, "LLAMA3", str(out))
    model = ckpt.load_checkpoint()["model"]
    ckpt.save_checkpoint({"model": model, "seed": 3, "epochs_run": 1}, epoch=0,
                         intermediate_checkpoint=True, step=10)
    step = out / "step_10"
    resumed = FullModelMetaCheckpointer(
        str(step), [f"meta_model_0/{n}" for n in names], "LLAMA3", str(out),
        recipe_checkpoint="recipe_state.pt", resume_from_checkpoint=True,
    ).load_checkpoint()
    assert resumed["seed"] == 3
    assert_same_tensors(resumed["model"], model)


def _write_ranks(folder, ranks, names):
    os.makedirs(folder, exist_ok=True)
    for name, sd in zip(names, ranks):
        torch.save(sd, os.path.join(folder, name))
    write_meta_folder(str(folder) + "_sidecars", {}, 0)
    for extra in ("params.json", "tokenizer.model"):
        os.replace(os.path.join(str(folder) + "_sidecars", extra), os.path.join(folder, extra))


def _bad_ranks(kind):
    full = meta_state_dict()
    two, four = split_like_fairscale(full, 2), split_like_fairscale(full, 4)
    names2 = ["consolidated.00.pth", "consolidated.01.pth"]
    if kind == "mixed":  # rank 0 of a 2-way split with rank 1 of a 4-way split
        return [two[0], four[1]], names2, "disagree on"
    if kind == "missing_tensor":
        del two[1]["layers.1.ffn_norm.weight"]
        return two, names2, "hold different tensors ('layers.1.ffn_norm.weight'"
    if kind == "replicated_differs":
        two[1]["norm.weight"] = two[1]["norm.weight"] + 1
        return two, names2, "different values of the replicated tensor 'norm.weight'"
    if kind == "gap":
        return four[:3], ["consolidated.00.pth", "consolidated.01.pth", "consolidated.03.pth"], "ranks [0, 1, 3]"
    if kind == "subset":  # 2 of 4 ranks, renumbered: only params.json can tell
        return four[:2], names2, "join into an embedding of size 16, but params.json has dim 32"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["mixed", "missing_tensor", "replicated_differs", "gap", "subset"])
def test_inconsistent_model_parallel_files_are_one_line_errors(tmp_path, kind):
    ranks, names, needle = _bad_ranks(kind)
    _write_ranks(tmp_path / "in", ranks, names)
    with pytest.raises(UserValueError) as err:
        ckpt = FullModelMetaCheckpointer(str(tmp_path / "in"), names, "LLAMA3", str(tmp_path / "out"))
        ckpt.load_checkpoint()
    assert needle in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_torchtune_checkpointer_accepts_llama3_types(tmp_path):
    full = meta_state_dict(tied=True)
    names = write_meta_folder(str(tmp_path / "in"), full)
    model = FullModelMetaCheckpointer(str(tmp_path / "in"), names, "LLAMA3_2",
                                      str(tmp_path / "o")).load_checkpoint()["model"]
    torch.save(model, tmp_path / "tt.pt")
    tt = FullModelTorchTuneCheckpointer(str(tmp_path), ["tt.pt"], "LLAMA3_2", str(tmp_path / "out"))
    got = tt.load_checkpoint()["model"]
    assert_same_tensors(got, model)
    tt.save_checkpoint({"model": got}, epoch=0)
    assert_same_tensors(load(tmp_path / "out" / "torchtune_model_0.pt"), model)
