"""A model config that does not fit the checkpoint is refused before the model is built,
including head counts that give the same shapes; tying is read from config.json (issue 24,
items 8 and 19)."""

import pytest
import torch
from omegaconf import OmegaConf

from torchtune import UserValueError
from torchtune.models.llama2 import llama2
from torchtune.training import check_attention_layout, check_checkpoint_fits, tie_like_checkpoint
from torchtune.training.checkpointing import FullModelHFCheckpointer


def _llama(num_heads, num_kv_heads, embed_dim=32):
    return llama2(vocab_size=64, num_layers=2, num_heads=num_heads, num_kv_heads=num_kv_heads,
                  embed_dim=embed_dim, intermediate_dim=48, max_seq_len=32)


def test_head_counts_with_the_same_shapes_are_refused(tmp_path, tiny):
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 1, index=False)
    ckpt = FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
    layout = ckpt.model_layout  # 4 heads, 2 kv heads of 8
    check_attention_layout(_llama(4, 2), layout)
    wrong = _llama(2, 1)  # 2 heads of 16, 1 kv head of 16: every tensor has the same shape
    assert {k: v.shape for k, v in wrong.state_dict().items()} == {k: v.shape for k, v in _llama(4, 2).state_dict().items()}
    with pytest.raises(UserValueError) as err:
        check_attention_layout(wrong, layout)
    msg = str(err.value)
    assert msg.startswith("model: the config builds attention with num_heads 2, num_kv_heads 1, head_dim 16, dim 32, but config.json ")
    assert "says num_heads 4, num_kv_heads 2, head_dim 8, dim 32; build the model with num_heads=4, num_kv_heads=2" in msg


def test_sizes_are_checked_on_a_meta_copy_before_building(tmp_path, tiny):
    names, _, _ = tiny.write_hf(tmp_path, "safetensors", 1, index=False)
    ckpt = FullModelHFCheckpointer(str(tmp_path), names, "LLAMA2", str(tmp_path / "out"))
    built = []

    def build():
        built.append(torch.empty(0).device)
        return _llama(4, 2, embed_dim=64)

    groups = ckpt.load_checkpoint(stream_model=True)["model"]
    with pytest.raises(UserValueError, match=r"shape mismatches \[.*tok_embeddings.weight: checkpoint \(64, 32\) vs model \(64, 64\)"):
        check_checkpoint_fits(build, groups, ckpt.model_layout)
    assert built == [torch.device("meta")]  # only the meta copy was ever built

    groups = check_checkpoint_fits(lambda: _llama(4, 2), ckpt.load_checkpoint(stream_model=True)["model"],
                                   ckpt.model_layout)
    assert sum(len(g) for g in groups) == len(_llama(4, 2).state_dict())  # the first group is put back


def _tiny_qwen3(folder, tied):
    import transformers

    config = transformers.Qwen3Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=tied,
        rope_theta=1e6,  # qwen3's builder default: the check compares every math field
    )
    torch.manual_seed(0)
    transformers.Qwen3ForCausalLM(config).save_pretrained(folder)


def test_tying_is_read_from_config_json(tmp_path):
    from torchtune import config

    _tiny_qwen3(tmp_path / "tied", tied=True)
    ckpt = FullModelHFCheckpointer(str(tmp_path / "tied"), ["model.safetensors"], "QWEN3", str(tmp_path / "out"))
    node = OmegaConf.create({
        "_component_": "torchtune.models.qwen3.lora_qwen3", "lora_attn_modules": ["q_proj", "v_proj"],
        "vocab_size": 96, "num_layers": 1, "num_heads": 4, "num_kv_heads": 2, "embed_dim": 32,
        "intermediate_dim": 64, "head_dim": 16, "max_seq_len": 64, "lora_rank": 4, "lora_alpha": 8,
    })
    untied = config.instantiate(node)  # lora_qwen3's default: an untied output
    with pytest.raises(UserValueError, match=r"config builds an untied output projection, but config.json .* says tie_word_embeddings true; set model.tie_word_embeddings=True"):
        check_attention_layout(untied, ckpt.model_layout)
    tie_like_checkpoint(node, ckpt.model_layout)
    assert node.tie_word_embeddings is True
    model = config.instantiate(node)
    check_attention_layout(model, ckpt.model_layout)
    missing, unexpected = model.load_state_dict(ckpt.load_checkpoint()["model"], strict=False)
    assert unexpected == [] and all("lora_" in k for k in missing)

    node.tie_word_embeddings = False  # set against the checkpoint
    with pytest.raises(UserValueError, match=r"model.tie_word_embeddings is False, but config.json .* says tie_word_embeddings true"):
        tie_like_checkpoint(node, ckpt.model_layout)
