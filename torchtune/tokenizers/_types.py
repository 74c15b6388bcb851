from typing import List, Protocol, runtime_checkable


@runtime_checkable
class Tokenizer(Protocol):
    """What datasets and recipes need from a tokenizer (see docs/design.md).

    Attributes:
        bos_id (int): id prepended when ``add_bos=True``.
        eos_id (int): id appended when ``add_eos=True``.
        pad_id (int): id used to pad batches and packed rows.
        vocab_size (int): number of ids the model's embedding must cover.

    Optionally, ``splits_at_spaces`` (bool, taken as True when absent): no piece spans a
    space that follows a non-space character, so ``encode_truncated`` may trust a
    prefix of a long text cut there; set it False for a tokenizer whose pieces cross
    spaces, and every cut is then checked against a longer prefix. It is not a protocol
    member, so tokenizers without it still match.
    """

    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int

    def encode(
        self,
        text: str,
        add_bos: bool = True,
        add_eos: bool = True,
        trim_leading_whitespace: bool = False,
    ) -> List[int]:
        ...

    def decode(self, ids: List[int]) -> str:
        ...
