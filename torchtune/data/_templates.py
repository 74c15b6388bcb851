from typing import ClassVar, Mapping, Protocol, Tuple


class InstructTemplate(Protocol):
    """Turns one instruction record into the prompt text that precedes its response.

    ``required_columns`` must be present (and not null) in every record; ``optional_columns``
    may be absent from a dataset altogether. ``format`` receives the record with the
    template's own column names (``instruct_dataset``'s ``column_map`` renames first).
    """

    required_columns: ClassVar[Tuple[str, ...]]
    optional_columns: ClassVar[Tuple[str, ...]]

    @classmethod
    def format(cls, sample: Mapping[str, str]) -> str:
        ...


class AlpacaInstructTemplate:
    """The Stanford Alpaca prompt, with and without an input.

    The text is the original one from tatsu-lab/stanford_alpaca ``train.py`` (PROMPT_DICT),
    followed by a newline after "### Response:", as in the ``text`` column Tatsu Lab
    published in the ``tatsu-lab/alpaca`` dataset and in torchtune. The newline also gives
    a clean token boundary: with the Llama 2 tokenizer the prompt and the response encoded
    separately concatenate to exactly the ids of the whole text.

    Example:
        >>> AlpacaInstructTemplate.format({"instruction": "Add 2 and 3.", "input": ""})
        'Below is an instruction that describes a task. Write a response ...### Response:\\n'
    """

    required_columns: ClassVar[Tuple[str, ...]] = ("instruction",)
    optional_columns: ClassVar[Tuple[str, ...]] = ("input",)

    PROMPT_INPUT: ClassVar[str] = (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    )
    PROMPT_NO_INPUT: ClassVar[str] = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Response:\n"
    )

    @classmethod
    def format(cls, sample: Mapping[str, str]) -> str:
        """Format one record.

        Args:
            sample (Mapping[str, str]): has "instruction" and optionally "input"; an empty
                or missing input selects the prompt without input, as Alpaca did.

        Returns:
            str: the prompt.
        """
        if sample.get("input"):
            return cls.PROMPT_INPUT.format(instruction=sample["instruction"], input=sample["input"])
        return cls.PROMPT_NO_INPUT.format(instruction=sample["instruction"])
