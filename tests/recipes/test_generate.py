"""The generate recipe on the bundled stories260K model.

The reference is transformers' ``LlamaForCausalLM.generate(do_sample=False)`` on the same
weights (carried over by our ``tune_to_hf``): greedy output must agree token for token.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipes.generate import GenerateParams, GenerateRecipe, recipe_main
from torchtune import config
from torchtune.data import AlpacaInstructTemplate, Llama2ChatFormat, Message
from torchtune.models.llama2 import llama2_tokenizer
from torchtune.models.llama2._convert_weights import meta_to_tune, tune_to_hf

REPO = Path(__file__).resolve().parents[2]
STORIES = REPO / "torchtune" / "assets" / "stories260K"
CONFIG = "stories260K/generation"
ALPACA_RECORD = json.loads((REPO / "tests" / "assets" / "alpaca_1000.json").read_text())[0]


@pytest.fixture(autouse=True)
def _repo_cwd_one_thread(monkeypatch):
    # The config's paths are relative to the repository root. One thread: a 260K-parameter
    # model gains nothing from more, and the test machine's two cores are shared.
    monkeypatch.chdir(REPO)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=5,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(hf_config).eval()
    sd = meta_to_tune(torch.load(STORIES / "consolidated.00.pth", weights_only=True))
    model.load_state_dict(tune_to_hf(sd, num_heads=8, num_kv_heads=4, dim=64), strict=True)
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return llama2_tokenizer(str(STORIES / "tokenizer.model"))


def hf_greedy(model, prompt_ids: list, max_new_tokens: int, eos_id: int = 2) -> list:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=0,
        )
    return out[0].tolist()


def make_recipe(overrides: list) -> GenerateRecipe:
    cfg = config.load_and_override(CONFIG, overrides)
    config.validate(cfg, GenerateParams)
    recipe = GenerateRecipe(cfg)
    recipe.setup(cfg)
    return recipe


PROMPTS = {
    "plain": (["prompt=Once upon a time"], lambda: "Once upon a time"),
    "alpaca": (
        ["instruct_template=torchtune.data.AlpacaInstructTemplate",
         "prompt=" + json.dumps({k: ALPACA_RECORD[k] for k in ("instruction", "input")})],
        lambda: AlpacaInstructTemplate.format(ALPACA_RECORD),
    ),
    "chat": (
        ["chat_format=torchtune.data.Llama2ChatFormat",
         "prompt={system: You tell short stories., user: Tell me about a cat.}"],
        lambda: Llama2ChatFormat.format(
            [Message("system", "You tell short stories."), Message("user", "Tell me about a cat.")]
        )[0].content,
    ),
}


@pytest.mark.parametrize("style", sorted(PROMPTS))
def test_greedy_matches_transformers(style, hf_model, tokenizer, capsys):
    overrides, expected_text = PROMPTS[style]
    recipe = make_recipe([*overrides, "temperature=0", "max_new_tokens=80"])
    prompt_ids = tokenizer.encode(expected_text(), add_bos=True, add_eos=False)
    assert recipe._prompt_tokens == prompt_ids

    tokens = recipe.generate()
    assert tokens == hf_greedy(hf_model, prompt_ids, 80)
    assert len(tokens) == len(prompt_ids) + 80  # this model never emits EOS on its own
    assert capsys.readouterr().out == tokenizer.decode(tokens) + "\n"


def test_stops_at_eos(hf_model, tokenizer):
    recipe = make_recipe(["temperature=0", "max_new_tokens=80"])
    full = recipe.generate()
    # stories260K was trained without EOS, so make the tokenizer's EOS a token the greedy
    # text does produce: the full stop. Generation must end right after the first one.
    period = tokenizer.encode(".", add_bos=False, add_eos=False)[-1]
    recipe._tokenizer._base.eos_id = period  # the SentencePiece model's attribute
    stopped = recipe.generate()
    end = full.index(period, len(recipe._prompt_tokens)) + 1
    assert stopped == full[:end]
    assert stopped == hf_greedy(hf_model, recipe._prompt_tokens, 80, eos_id=period)


def test_sampling_settings():
    greedy = make_recipe(["temperature=0", "max_new_tokens=40"]).generate()
    # top_k=1 leaves only the best token, so sampling at any temperature is greedy.
    assert make_recipe(["temperature=1.5", "top_k=1", "max_new_tokens=40"]).generate() == greedy
    a = make_recipe(["temperature=1.0", "top_k=null", "seed=3", "max_new_tokens=40"]).generate()
    b = make_recipe(["temperature=1.0", "top_k=null", "seed=3", "max_new_tokens=40"]).generate()
    c = make_recipe(["temperature=1.0", "top_k=null", "seed=4", "max_new_tokens=40"]).generate()
    assert a == b and a != c and a != greedy


def test_tune_run(hf_model, tokenizer):
    out = subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "run", "generate", "--config", CONFIG,
         "prompt=Once upon a time", "temperature=0", "max_new_tokens=60"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    expected = hf_greedy(hf_model, tokenizer.encode("Once upon a time", add_bos=True, add_eos=False), 60)
    assert out.stdout == tokenizer.decode(expected) + "\n"
    assert "60 tokens in" in out.stderr and "tokens/s" in out.stderr


def test_loads_an_hf_checkpoint(tmp_path, tokenizer):
    # The same weights in HF layout (what FullModelHFCheckpointer reads and a fine-tune of an
    # HF model writes) give the same greedy text as the bundled Meta checkpoint.
    from safetensors.torch import save_file

    sd = meta_to_tune(torch.load(STORIES / "consolidated.00.pth", weights_only=True))
    save_file(tune_to_hf(sd, num_heads=8, num_kv_heads=4, dim=64), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64,
        "num_attention_heads": 8, "num_key_value_heads": 4, "num_hidden_layers": 5,
        "vocab_size": 512, "intermediate_size": 172, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 512, "tie_word_embeddings": False,
    }))
    hf = make_recipe([
        "checkpointer._component_=torchtune.utils.FullModelHFCheckpointer",
        f"checkpointer.checkpoint_dir={tmp_path}", "checkpointer.checkpoint_files=[model.safetensors]",
        "temperature=0", "max_new_tokens=30",
    ]).generate()
    assert hf == make_recipe(["temperature=0", "max_new_tokens=30"]).generate()


@pytest.mark.parametrize("overrides,message", [
    (["prompt="], "prompt is empty"),
    # The prompt is checked before the checkpoint is read (which can take minutes).
    (["prompt=", "checkpointer.checkpoint_files=[missing.pth]"], "prompt is empty"),
    (["checkpointer.checkpoint_files=[missing.pth]"], "missing.pth not found"),
    (["instruct_template=torchtune.data.AlpacaInstructTemplate", "prompt={instruction: ' ', input: x}"],
     "prompt is empty: prompt.instruction is required"),
    (["chat_format=torchtune.data.Llama2ChatFormat", "prompt={system: Be brief.}"],
     "prompt is empty: chat_format needs a user message"),
    (["model.num_layers=4"], "does not fit the model: unexpected tensors [layers.4."),
    (["model.embed_dim=32", "model.num_heads=4", "model.num_kv_heads=2"],
     "tok_embeddings.weight: checkpoint (512, 64) vs model (512, 32)"),
    (["max_new_tokens=600"], "exceeds the model's max_seq_len (512)"),
    (["instruct_template=torchtune.data.AlpacaInstructTemplate",
      "chat_format=torchtune.data.Llama2ChatFormat"],
     "at most one of instruct_template and chat_format"),
])
def test_bad_input_fails_with_one_line(overrides, message, capsys):
    with pytest.raises(SystemExit) as exc:
        recipe_main(["--config", CONFIG, *overrides])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("INFO:")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def test_empty_prompt_through_tune_run():
    out = subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "run", "generate", "--config", CONFIG, "prompt='   '"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1 and out.stdout == ""
    assert [l for l in out.stderr.splitlines() if not l.startswith("INFO:")] == [
        "error: prompt is empty: give some text to continue"
    ]


def test_prompt_ending_in_a_colon_through_tune_run(tokenizer):
    # yaml reads `ROMEO:` as the mapping {ROMEO: None}, which the recipe refused ("prompt:
    # ['ROMEO'] are not allowed in a chat prompt"): the override keeps the text as typed.
    out = subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "run", "generate", "--config", CONFIG,
         "prompt=ROMEO:", "temperature=0", "max_new_tokens=10"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    prompt_ids = tokenizer.encode("ROMEO:", add_bos=True, add_eos=False)
    assert out.stdout.startswith("ROMEO:")
    assert tokenizer.encode(out.stdout.rstrip("\n"), add_bos=True, add_eos=False)[: len(prompt_ids)] == prompt_ids


def test_chat_prompt_through_a_tokenizer_with_its_own_format(tmp_path):
    """With Llama 3's tokenizer, {system, user} becomes the official conversation with an
    open assistant header, and generation stops at <|eot_id|> as well as EOS."""
    import lzma

    from torchtune.models.llama3 import llama3_tokenizer

    path = tmp_path / "tokenizer.model"
    path.write_bytes(lzma.decompress((REPO / "tests" / "assets" / "llama3_tokenizer.model.xz").read_bytes()))
    recipe = GenerateRecipe.__new__(GenerateRecipe)  # only the prompt step: no model
    recipe._tokenizer = llama3_tokenizer(str(path))
    ids = recipe._setup_prompt({"system": "Be brief.", "user": "Hi"}, None, None)
    assert recipe._tokenizer.decode(ids, skip_special_tokens=False) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert 128009 in recipe._tokenizer.stop_tokens
    with pytest.raises(ValueError, match="needs a user message"):
        recipe._setup_prompt({"system": "Be brief."}, None, None)
