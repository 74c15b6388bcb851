"""Mistral: 0.6.1's builders at their exact sizes, checkpoints read as the official repos lay
them out (transformers' ``MistralForCausalLM`` folder; Mistral's own ``consolidated``
names), the sliding window honoured, and the tokenizer with 0.6.1's chat template."""

import inspect
import json

import pytest
import torch

from hf_folders import ROWS, write_folder
from torchtune._errors import UserValueError
from torchtune.data import Message
from torchtune.models.mistral import (
    lora_mistral, lora_mistral_7b, mistral, mistral_7b, mistral_reward_7b, mistral_tokenizer,
    MistralChatTemplate, qlora_mistral_7b,
)
from torchtune.models.mistral._convert_weights import meta_to_tune, tune_to_meta
from torchtune.training import check_attention_layout
from torchtune.utils import FullModelHFCheckpointer

transformers = pytest.importorskip("transformers")

# mistralai/Mistral-7B-v0.1 config.json.
OFFICIAL_7B = dict(
    vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
    rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False,
)


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_7b_sizes_equal_transformers_on_the_meta_device():
    config = transformers.MistralConfig(**OFFICIAL_7B)
    with torch.device("meta"):
        ours, ours_reward = mistral_7b(), mistral_reward_7b()
        theirs = transformers.MistralForCausalLM(config)
        reward = transformers.MistralForSequenceClassification(
            transformers.MistralConfig(**OFFICIAL_7B, num_labels=1))
    print(f"mistral_7b: {_count(ours):,} parameters; mistral_reward_7b: {_count(ours_reward):,}")
    assert _count(ours) == _count(theirs) == 7_241_732_096
    assert _count(ours_reward) == _count(reward)
    assert ours.description.layers[0].attention.sliding_window == 4096
    assert ours_reward.output.weight.shape == (1, 4096)


def test_lora_signatures_are_061s():
    assert list(inspect.signature(lora_mistral).parameters) == [
        "lora_attn_modules", "apply_lora_to_mlp", "apply_lora_to_output", "vocab_size",
        "num_layers", "num_heads", "num_kv_heads", "embed_dim", "max_seq_len",
        "intermediate_dim", "attn_dropout", "norm_eps", "rope_base", "sliding_window",
        "lora_rank", "lora_alpha", "lora_dropout", "use_dora", "quantize_base"]
    defaults = {k: p.default for k, p in inspect.signature(lora_mistral_7b).parameters.items()}
    assert defaults["lora_rank"] == 8 and defaults["lora_alpha"] == 16 and defaults["lora_dropout"] == 0.0
    assert qlora_mistral_7b.keywords == {"quantize_base": True}


def _tiny(sliding_window):
    c = ROWS["mistral"].config
    return mistral(vocab_size=320, num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                   num_kv_heads=c["num_key_value_heads"], embed_dim=c["hidden_size"],
                   intermediate_dim=c["intermediate_size"], max_seq_len=256, norm_eps=c["rms_norm_eps"],
                   sliding_window=sliding_window)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mistral") / "tiny-mistral"
    write_folder(ROWS["mistral"], folder)
    return folder


def test_named_builder_reads_the_hf_folder_with_its_window(folder, tmp_path, assert_decoding_equals_full_forward):
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path), model_type="MISTRAL")
    model = _tiny(sliding_window=16)
    check_attention_layout(model, ckpt.model_layout)
    model.load_state_dict(ckpt.load_checkpoint()["model"])
    hf = transformers.MistralForCausalLM.from_pretrained(folder).float().eval()
    tokens = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # fp32 rounding of two width-48 layers is ~1e-6; the window (16 < 40) changes logits by 1e-2.
        torch.testing.assert_close(model.eval()(tokens), hf(tokens).logits, atol=1e-5, rtol=0)
    assert_decoding_equals_full_forward(model, tokens[:1, :32], prefill=8)  # crosses the window


def test_named_builder_without_the_folders_window_is_refused(folder, tmp_path):
    ckpt = FullModelHFCheckpointer(str(folder), output_dir=str(tmp_path), model_type="MISTRAL")
    with pytest.raises(UserValueError, match=r"sliding_window = None, but config.json .* says 16"):
        check_attention_layout(_tiny(sliding_window=None), ckpt.model_layout)


def test_consolidated_names_round_trip():
    sd = {k: v for k, v in _tiny(16).state_dict().items()}
    meta = tune_to_meta(sd)
    assert "layers.0.attention.wq.weight" in meta and "output.weight" in meta
    back = meta_to_tune(meta)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)


def test_tokenizer_and_061_chat_template(tmp_path):
    """0.6.1's ``MistralChatTemplate`` is still a prompt template of its own; given to the
    tokenizer (0.6.1's default) it means the published template, which
    tests/torchtune/models/test_family_chat_formats.py checks id for id."""
    from pathlib import Path

    path = Path(__file__).parents[3] / "assets" / "llama2_tokenizer.model"
    tok = mistral_tokenizer(str(path), max_seq_len=64)
    assert (tok.bos_id, tok.eos_id, tok.max_seq_len, tok.prompt_template) == (1, 2, 64, None)
    chat = MistralChatTemplate()([Message("user", "Hi"), Message("assistant", "Hello")])
    assert [m.content for m in chat] == ["[INST] Hi [/INST] ", "Hello"]
    with pytest.raises(UserValueError, match="system messages are not supported by MistralChatTemplate"):
        MistralChatTemplate()([Message("system", "Be brief."), Message("user", "Hi")])
    ids, _ = tok.tokenize_messages([Message("user", "Hi"), Message("assistant", "Hello")])
    assert tok.decode(ids) == "[INST] Hi [/INST] Hello" and len(ids) <= 64


def test_reward_model_reads_and_writes_transformers_classifier(tmp_path):
    """``MistralForSequenceClassification`` (``score.weight``, no lm_head) through
    ``model_type: REWARD`` (inferred from config.json too) into ``mistral_classifier``:
    per-position scores equal ``score(hidden)``; the save is the same files' names."""
    from safetensors.torch import load_file

    from torchtune.models.mistral import mistral_classifier

    c = ROWS["mistral"].config
    config = transformers.MistralConfig(vocab_size=320, num_labels=1, pad_token_id=0, **c)
    torch.manual_seed(0)
    hf = transformers.MistralForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "rm")
    ckpt = FullModelHFCheckpointer(str(tmp_path / "rm"), output_dir=str(tmp_path / "out"))
    assert ckpt._c.model_type.name == "REWARD"  # inferred: no model_type given
    model = mistral_classifier(
        num_classes=1, vocab_size=320, num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
        num_kv_heads=c["num_key_value_heads"], embed_dim=c["hidden_size"],
        intermediate_dim=c["intermediate_size"], max_seq_len=256, norm_eps=c["rms_norm_eps"], sliding_window=16)
    check_attention_layout(model, ckpt.model_layout)
    state = ckpt.load_checkpoint()
    model.load_state_dict(state["model"])
    tokens = torch.randint(1, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf.score(hf.model(tokens).last_hidden_state)
        torch.testing.assert_close(model.eval()(tokens), theirs, atol=1e-5, rtol=0)
    ckpt.save_checkpoint(state, epoch=0)
    saved = load_file(str(tmp_path / "out" / "epoch_0" / "model.safetensors"))
    assert saved.keys() == hf.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in hf.state_dict().items())


def test_consolidated_safetensors_through_the_meta_checkpointer(folder, tmp_path):
    """Mistral's own layout (mistral-inference): ``consolidated.safetensors`` with Meta's
    names and a ``params.json`` that gives ``head_dim``. ``model_type: MISTRAL`` reads it
    into the model transformers' folder gives (same logits), and the save is safetensors
    with the same names and, untrained, the same tensors."""
    from safetensors.torch import load_file, save_file

    from torchtune.models.mistral._convert_weights import hf_to_tune
    from torchtune.utils import FullModelMetaCheckpointer

    c = ROWS["mistral"].config
    heads = dict(num_heads=c["num_attention_heads"], num_kv_heads=c["num_key_value_heads"], dim=c["hidden_size"])
    meta = tune_to_meta(hf_to_tune(load_file(str(folder / "model.safetensors")), **heads))
    own = tmp_path / "Mistral-tiny"
    own.mkdir()
    save_file({k: v.contiguous() for k, v in meta.items()}, str(own / "consolidated.safetensors"))
    (own / "params.json").write_text(json.dumps({
        "dim": c["hidden_size"], "n_layers": c["num_hidden_layers"], "head_dim": c["hidden_size"] // c["num_attention_heads"],
        "hidden_dim": c["intermediate_size"], "n_heads": c["num_attention_heads"],
        "n_kv_heads": c["num_key_value_heads"], "norm_eps": c["rms_norm_eps"], "sliding_window": 16,
        "vocab_size": 320}))
    ckpt = FullModelMetaCheckpointer(str(own), ["consolidated.safetensors"], "MISTRAL", str(tmp_path / "out"))
    model = _tiny(sliding_window=16)
    check_attention_layout(model, ckpt.model_layout)
    state = ckpt.load_checkpoint()
    model.load_state_dict(state["model"])
    hf = transformers.MistralForCausalLM.from_pretrained(folder).float().eval()
    tokens = torch.randint(0, 320, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(tokens), hf(tokens).logits, atol=1e-5, rtol=0)
    ckpt.save_checkpoint(state, epoch=0)
    saved = load_file(str(tmp_path / "out" / "meta_model_0.safetensors"))
    assert saved.keys() == meta.keys() and all(torch.equal(saved[k], meta[k]) for k in meta)
    assert (tmp_path / "out" / "params.json").read_text() == (own / "params.json").read_text()
