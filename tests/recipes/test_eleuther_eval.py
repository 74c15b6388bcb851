"""The eleuther_eval recipe on the bundled stories260K model and local TinyStories tasks.

The reference is lm-eval's own transformers model, ``HFLM``, wrapping a ``LlamaForCausalLM``
built from the same weights (carried over by our ``tune_to_hf``) and a transformers Llama
tokenizer made from the same SentencePiece file. The three tasks in eval_assets/ cover the
three request types: stories_mc (loglikelihood), stories_ppl (rolling loglikelihood) and
stories_gen (generate_until). Tolerances: fp32 on CPU, the two models differing only in
kernel order; per-request log-probabilities within 1e-4 nats (relative 1e-6 for a whole
story's), greedy generations and accuracies identical.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")

from lm_eval.evaluator import simple_evaluate  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from recipes.eleuther_eval import _LLMEvalWrapper, recipe_main  # noqa: E402
from torchtune.models.llama2 import llama2, llama2_tokenizer  # noqa: E402
from torchtune.models.llama2._convert_weights import meta_to_tune, tune_to_hf  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STORIES = REPO / "torchtune" / "assets" / "stories260K"
ASSETS = REPO / "tests" / "recipes" / "eval_assets"
CONFIG = "stories260K/eleuther_evaluation"
TASKS = ["stories_gen", "stories_mc", "stories_ppl"]
MAX_LEN = 64  # shorter than every story, so each rolling loglikelihood spans several windows
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@contextlib.contextmanager
def repo_cwd_offline_one_thread():
    # Task data paths are relative to the repository root; nothing may be downloaded; one
    # thread, since a 260K-parameter model gains nothing from more on shared cores.
    cwd, env, threads = os.getcwd(), dict(os.environ), torch.get_num_threads()
    os.chdir(REPO)
    os.environ.update(OFFLINE)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        torch.set_num_threads(threads)


def evaluate(lm, tasks: list) -> dict:
    manager = TaskManager(include_path=str(ASSETS), include_defaults=False)
    with repo_cwd_offline_one_thread():
        return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True)


def stories_state_dict() -> dict:
    return meta_to_tune(torch.load(STORIES / "consolidated.00.pth", weights_only=True))


@pytest.fixture(scope="module")
def hf_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_tokenizer")
    shutil.copy(STORIES / "tokenizer.model", folder / "tokenizer.model")
    # Llama 2's published tokenizer config adds BOS; a bare tokenizer.model does not say so.
    return transformers.LlamaTokenizer.from_pretrained(str(folder), add_bos_token=True)


@pytest.fixture(scope="module")
def reference(hf_tokenizer) -> dict:
    """The three tasks through HFLM: {"results": {task: metrics}, "samples": {task: [...]}}."""
    hf_config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=5,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
    )
    model = transformers.LlamaForCausalLM(hf_config).eval()
    model.load_state_dict(tune_to_hf(stories_state_dict(), num_heads=8, num_kv_heads=4, dim=64))
    common = dict(pretrained=model, tokenizer=hf_tokenizer, batch_size=4, max_length=MAX_LEN, device="cpu")
    out = evaluate(HFLM(**common), ["stories_mc", "stories_gen"])
    # HFLM's rolling loglikelihood scores tok_encode(text), which by default starts with BOS,
    # so its first window also scores a BOS after the BOS prefix. add_bos_token=False gives
    # log p(text | BOS), what our recipe computes.
    ppl = evaluate(HFLM(**common, add_bos_token=False), ["stories_ppl"])
    return {key: {**out[key], **ppl[key]} for key in ("results", "samples")}


@pytest.fixture(scope="module")
def ours() -> dict:
    model = llama2(vocab_size=512, num_layers=5, num_heads=8, num_kv_heads=4, embed_dim=64,
                   max_seq_len=512, intermediate_dim=172, norm_eps=1e-5)
    model.load_state_dict(stories_state_dict())
    model.eval()
    tokenizer = llama2_tokenizer(str(STORIES / "tokenizer.model"))
    # batch_size differs from the reference's on purpose: batching must not change a score.
    lm = _LLMEvalWrapper(model, tokenizer, device=torch.device("cpu"), max_seq_length=MAX_LEN, batch_size=3)
    return evaluate(lm, TASKS)


def test_tokenizers_agree(hf_tokenizer):
    # The comparison below rests on both sides producing the same ids for every text.
    ours = llama2_tokenizer(str(STORIES / "tokenizer.model"))
    texts = [r["text"] for r in json.loads((ASSETS / "stories.json").read_text())]
    for record in json.loads((ASSETS / "stories_mc.json").read_text()):
        texts += [record["context"] + " " + choice for choice in record["choices"]]
    texts += [r["prompt"] for r in json.loads((ASSETS / "stories_gen.json").read_text())]
    for text in texts:
        assert hf_tokenizer.encode(text) == ours.encode(text, add_bos=True, add_eos=False), text
    assert min(len(ours.encode(r, add_bos=False, add_eos=False)) for r in texts[:5]) > 2 * MAX_LEN


def test_stories_json_is_the_tinystories_sample():
    # eval_assets/README.md: stories.json holds the stories of tests/assets/tinystories_sample_eot.txt.
    sample = (REPO / "tests" / "assets" / "tinystories_sample_eot.txt").read_text(encoding="utf-8")
    stories = [s.strip() for s in sample.split("<|endoftext|>") if s.strip()]
    assert [r["text"] for r in json.loads((ASSETS / "stories.json").read_text(encoding="utf-8"))] == stories


def by_doc(samples: list) -> dict:
    return {s["doc_id"]: s for s in samples}


def test_loglikelihood_matches_hflm(ours, reference):
    ref, got = by_doc(reference["samples"]["stories_mc"]), by_doc(ours["samples"]["stories_mc"])
    assert sorted(got) == sorted(ref) == list(range(8))
    for doc_id, sample in got.items():
        # One (logprob, is_greedy) per choice.
        ours_ll = [resp[0] for resp in sample["resps"]]
        ref_ll = [resp[0] for resp in ref[doc_id]["resps"]]
        torch.testing.assert_close(torch.tensor([ll for ll, _ in ours_ll], dtype=torch.float64),
                                   torch.tensor([ll for ll, _ in ref_ll], dtype=torch.float64),
                                   atol=1e-4, rtol=0)
        assert [g for _, g in ours_ll] == [g for _, g in ref_ll]
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["stories_mc"][metric] == reference["results"]["stories_mc"][metric]
    assert ours["results"]["stories_mc"]["acc,none"] > 0.5  # the model reads the stories


def test_rolling_loglikelihood_matches_hflm(ours, reference):
    ref, got = by_doc(reference["samples"]["stories_ppl"]), by_doc(ours["samples"]["stories_ppl"])
    assert sorted(got) == sorted(ref) == list(range(5))
    ours_ll = torch.tensor([got[i]["resps"][0][0] for i in sorted(got)], dtype=torch.float64)
    ref_ll = torch.tensor([ref[i]["resps"][0][0] for i in sorted(ref)], dtype=torch.float64)
    torch.testing.assert_close(ours_ll, ref_ll, rtol=1e-6, atol=1e-4)
    for metric in ("word_perplexity,none", "byte_perplexity,none", "bits_per_byte,none"):
        assert ours["results"]["stories_ppl"][metric] == pytest.approx(
            reference["results"]["stories_ppl"][metric], rel=1e-6)
    assert 1.0 < ours["results"]["stories_ppl"]["byte_perplexity,none"] < 3.0


def test_generate_until_matches_hflm(ours, reference):
    ref, got = by_doc(reference["samples"]["stories_gen"]), by_doc(ours["samples"]["stories_gen"])
    assert sorted(got) == sorted(ref) == list(range(6))
    generations = {i: got[i]["filtered_resps"] for i in got}
    assert generations == {i: ref[i]["filtered_resps"] for i in ref}
    assert all(g[0] and " " not in g[0] for g in generations.values())  # one word, cut at the stop
    exact_match = [out["results"]["stories_gen"]["exact_match,none"] for out in (ours, reference)]
    assert exact_match == [0.5, 0.5]


def test_tune_run_writes_the_results(tmp_path, reference):
    out = subprocess.run(
        [sys.executable, "-m", "torchtune._cli.tune", "run", "eleuther_eval", "--config", CONFIG,
         f"output_dir={tmp_path}", f"max_seq_length={MAX_LEN}", "batch_size=2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", **OFFLINE),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert sorted(saved["results"]) == TASKS
    for task in TASKS:
        for metric, value in reference["results"][task].items():
            if isinstance(value, float):
                assert saved["results"][task][metric] == pytest.approx(value, rel=1e-6), (task, metric)
    table = [line for line in out.stdout.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1].strip() == "Tasks" and any("stories_ppl" in line for line in table)


def test_unknown_task_fails_with_one_line(capsys):
    with repo_cwd_offline_one_thread(), pytest.raises(SystemExit) as exc:
        recipe_main(["--config", CONFIG, "tasks=[stories_mc,stories_mcq]"])
    assert exc.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO:")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: tasks: unknown lm-eval task 'stories_mcq'; did you mean stories_mc")


def test_include_path_must_be_a_folder(capsys):
    with repo_cwd_offline_one_thread(), pytest.raises(SystemExit):
        recipe_main(["--config", CONFIG, "include_path=tests/recipes/no_such_folder"])
    err = capsys.readouterr().err
    assert err == "error: include_path: tests/recipes/no_such_folder is not a folder\n"
