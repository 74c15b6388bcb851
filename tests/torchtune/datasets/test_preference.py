"""preference_dataset: the layouts it reads, the masked prompt, the chat formats, truncation
that keeps the pair's prompt/answer boundary and drops pairs without an answer, and the
DPO collates."""

import json
import lzma
from pathlib import Path

import pytest

from torchtune import UserValueError
from torchtune.data import Message, padded_collate_dpo, padding_free_collate_dpo
from torchtune.datasets import hh_rlhf_helpful_dataset, preference_dataset, stack_exchange_paired_dataset
from torchtune.models.llama2 import llama2_tokenizer
from torchtune.models.llama3 import llama3_tokenizer

ASSETS = Path(__file__).parents[2] / "assets"
PAIRS = Path(__file__).parents[3] / "torchtune" / "assets" / "dpo_en_demo_subset.json"
IGN = -100


@pytest.fixture(scope="module")
def tok():
    return llama2_tokenizer(str(Path(__file__).parents[3] / "torchtune" / "assets" / "stories260K" / "tokenizer.model"))


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama3") / "tokenizer.model"
    path.write_bytes(lzma.decompress((ASSETS / "llama3_tokenizer.model.xz").read_bytes()))
    return llama3_tokenizer(str(path))


def write(tmp_path, records, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return str(path)


def answer(item, key):
    return [t for t, lab in zip(item[f"{key}_input_ids"], item[f"{key}_labels"]) if lab != IGN]


def prompt_len(item, key):
    return next(i for i, lab in enumerate(item[f"{key}_labels"]) if lab != IGN)


def test_sharegpt_conversations_chosen_rejected(tok):
    """The bundled LLaMA-Factory layout: the prompt (multi-turn, with earlier assistant turns)
    is masked; only the final answer is a target, and both sides share the prompt ids."""
    records = json.loads(PAIRS.read_text())
    ds = preference_dataset(tok, "json", data_files=str(PAIRS), max_seq_len=None)
    assert len(ds) == len(records)
    for item, record in zip(ds, records):
        n = prompt_len(item, "chosen")
        assert n == prompt_len(item, "rejected")
        assert item["chosen_input_ids"][:n] == item["rejected_input_ids"][:n]
        # The answer is the chosen text, encoded after the prompt (Llama 2 format: "{answer} " + EOS).
        expected = tok.encode(record["chosen"]["value"].strip() + " ", add_bos=False, add_eos=True)
        assert answer(item, "chosen") == expected
    multi = [i for i, r in enumerate(records) if len(r["conversations"]) >= 5]
    assert multi and all(prompt_len(ds[i], "chosen") > 100 for i in multi)


def test_prompt_chosen_rejected_strings_and_builders(tok, tmp_path):
    data = [{"question": "What is 2+2?", "response_j": "4", "response_k": "5"}]
    path = write(tmp_path, data)
    a = stack_exchange_paired_dataset(tok, source="json", data_files=path)[0]
    b = preference_dataset(
        tok, "json", data_files=path,
        column_map={"prompt": "question", "chosen": "response_j", "rejected": "response_k"},
    )[0]
    assert a == b
    assert answer(a, "chosen") == tok.encode("4 ", add_bos=False, add_eos=True)
    assert a["chosen_input_ids"][: prompt_len(a, "chosen")] == tok.encode("[INST] What is 2+2? [/INST]", add_eos=False)


def test_whole_conversations_as_chosen_rejected(tok, tmp_path):
    """HH-RLHF standardised: chosen/rejected are whole OpenAI conversations; everything
    before the last turn is the shared prompt."""
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
             {"role": "user", "content": "Name a colour"}]
    data = [{"chosen": turns + [{"role": "assistant", "content": "Blue"}],
             "rejected": turns + [{"role": "assistant", "content": "No"}]}]
    item = hh_rlhf_helpful_dataset(tok, source="json", data_files=write(tmp_path, data))[0]
    assert answer(item, "chosen") == tok.encode("Blue ", add_bos=False, add_eos=True)
    assert answer(item, "rejected") == tok.encode("No ", add_bos=False, add_eos=True)
    bad = [{"chosen": turns + [{"role": "assistant", "content": "Blue"}],
            "rejected": turns[:1] + [{"role": "assistant", "content": "No"}]}]
    with pytest.raises(UserValueError, match="row 0: chosen and rejected differ"):
        preference_dataset(tok, "json", data_files=write(tmp_path, bad, "bad.json"))


def test_llama3_chat_format_masks_the_whole_prompt(llama3, tmp_path):
    records = json.loads(PAIRS.read_text())
    record = next(r for r in records if len(r["conversations"]) >= 5)
    item = preference_dataset(llama3, "json", data_files=write(tmp_path, [record]))[0]
    prompt = [Message({"human": "user", "gpt": "assistant", "system": "system"}[t["from"]], t["value"], masked=True)
              for t in record["conversations"]]
    for key in ("chosen", "rejected"):
        tokens, mask = llama3.tokenize_messages(prompt + [Message("assistant", record[key]["value"], masked=False)])
        assert item[f"{key}_input_ids"] == tokens
        assert item[f"{key}_labels"] == [IGN if m else t for t, m in zip(tokens, mask)]


def test_truncation_keeps_boundary_and_drops_pairs_without_answer(tok, tmp_path, caplog):
    long_prompt = "word " * 300
    data = [
        {"prompt": "Short question?", "chosen": "yes " * 200, "rejected": "no"},
        {"prompt": long_prompt, "chosen": "a", "rejected": "b"},  # the prompt fills max_seq_len
    ]
    ds = preference_dataset(tok, "json", data_files=write(tmp_path, data), max_seq_len=64)
    assert len(ds) == 1
    assert "dropped 1 of 2 pairs" in caplog.text
    item = ds[0]
    assert len(item["chosen_input_ids"]) == 64 and item["chosen_input_ids"][-1] == tok.eos_id
    assert prompt_len(item, "chosen") == prompt_len(item, "rejected")
    with pytest.raises(UserValueError, match="none of the 1 pairs keeps an answer token"):
        preference_dataset(tok, "json", data_files=write(tmp_path, data[1:], "long.json"), max_seq_len=64)


def test_malformed_rows_name_the_row(tok, tmp_path):
    data = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": 3, "rejected": "b"}]
    with pytest.raises(UserValueError, match="row 1: chosen is int"):
        preference_dataset(tok, "json", data_files=write(tmp_path, data))
    with pytest.raises(UserValueError, match="has no column 'rejected'"):
        preference_dataset(tok, "json", data_files=write(tmp_path, [{"prompt": "q", "chosen": "a"}], "x.json"))
    with pytest.raises(UserValueError, match="column_map: unknown key 'answer'"):
        preference_dataset(tok, "json", data_files=write(tmp_path, data[:1], "y.json"), column_map={"answer": "a"})


def test_collates_put_chosen_first():
    def pair(chosen, chosen_labels, rejected, rejected_labels):
        return {"chosen_input_ids": chosen, "chosen_labels": chosen_labels,
                "rejected_input_ids": rejected, "rejected_labels": rejected_labels}

    batch = [pair([1, 2], [IGN, 2], [1, 3, 4], [IGN, 3, 4]), pair([5, 6, 7], [IGN, IGN, 7], [5, 8], [IGN, 8])]
    padded = padded_collate_dpo(batch, padding_idx=0)
    assert padded["tokens"].tolist() == [[1, 2, 0], [5, 6, 7], [1, 3, 4], [5, 8, 0]]
    assert padded["labels"].tolist() == [[IGN, 2, IGN], [IGN, IGN, 7], [IGN, 3, 4], [IGN, 8, IGN]]
    cached = [dict(b, reference_chosen_logps=-1.0, reference_rejected_logps=-2.0) for b in batch]
    free = padding_free_collate_dpo(cached)
    assert free["tokens"].tolist() == [[1, 2, 5, 6, 7, 1, 3, 4, 5, 8]]
    assert free["seq_lens"].tolist() == [[2, 3, 3, 2]]
    assert free["reference_chosen_logps"].tolist() == [-1.0, -1.0]


def test_asset_rederives_from_shared_data(tok):
    """torchtune/assets/dpo_en_demo_subset.json is the subset its README describes: the 69
    shortest records whose prompt takes at most 448 tokens of the bundled tokenizer, so
    every pair keeps an answer at the stories260K DPO configs' max_seq_len of 512."""
    source = Path(__file__).parents[3].parent / "shared" / "data" / "preference" / "dpo_en_demo.json"
    if not source.exists():
        pytest.skip("shared/data is not present (CI)")
    d = json.loads(source.read_text())
    ds = preference_dataset(tok, "json", data_files=str(source), max_seq_len=None)

    def size(x):
        answer = max(len(x["chosen"]["value"]), len(x["rejected"]["value"]))
        return sum(len(t["value"]) for t in x["conversations"]) + answer

    fits = [k for k in range(len(d)) if prompt_len(ds[k], "chosen") <= 448]
    order = sorted(fits, key=lambda k: size(d[k]))
    expected = json.dumps([d[k] for k in sorted(order[:69])], ensure_ascii=False, indent=1) + "\n"
    assert PAIRS.read_text() == expected


def test_every_bundled_pair_keeps_an_answer_at_the_configs_max_seq_len(tok):
    ds = preference_dataset(tok, "json", data_files=str(PAIRS), max_seq_len=512)
    assert len(ds) == len(json.loads(PAIRS.read_text())) == 69
