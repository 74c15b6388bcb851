import pytest

from torchtune.data import AlpacaInstructTemplate, Llama2ChatFormat, Message


def test_alpaca_with_input():
    prompt = AlpacaInstructTemplate.format({"instruction": "Add the numbers.", "input": "2, 3"})
    assert prompt == (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2, 3\n\n### Response:\n"
    )


@pytest.mark.parametrize(
    "sample", [{"instruction": "Say hi.", "input": ""}, {"instruction": "Say hi."}]
)
def test_alpaca_without_input(sample):
    assert AlpacaInstructTemplate.format(sample) == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n"
    )


def test_llama2_chat_format_with_system_prompt():
    out = Llama2ChatFormat.format(
        [
            Message("system", "Be brief."),
            Message("user", " Hi! "),
            Message("assistant", "Hello. "),
            Message("user", "Bye"),
            Message("assistant", "Bye!"),
        ]
    )
    assert out == [
        # Meta strips the merged system + user text, so the user's leading space stays.
        Message("user", "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi! [/INST]"),
        Message("assistant", "Hello. "),
        Message("user", "[INST] Bye [/INST]"),
        Message("assistant", "Bye! "),
    ]


def test_llama2_chat_format_errors():
    with pytest.raises(ValueError, match="message 1 has role 'user', expected 'assistant'"):
        Llama2ChatFormat.format([Message("user", "a"), Message("user", "b")])
    with pytest.raises(ValueError, match="system message must be followed by a user message"):
        Llama2ChatFormat.format([Message("system", "a"), Message("assistant", "b")])
    with pytest.raises(ValueError, match="no user message"):
        Llama2ChatFormat.format([])
