"""The Phi-4 tokenizer builder (torchtune 0.6.1's signature): Phi-4's byte-level BPE and
the chat template of microsoft/phi-4.

Files: the model's ``tokenizer.json``, or its ``vocab.json`` and ``merges.txt`` (0.6.1's
configs name these two). From the pair, ``byte_level_bpe_json`` builds what the
``tokenizer.json`` holds: cl100k's split regex (Phi-4's BPE is OpenAI's cl100k_base), then
byte-level, no normalizer, and the 96 added tokens at ids 100256-100351 (``PHI4_SPECIAL_TOKENS``:
``<|endoftext|>``, the fill-in-the-middle and chat tokens, ``<|endofprompt|>`` and dummies).

Chat format, as the template writes it: ``<|im_start|>{role}<|im_sep|>{content}<|im_end|>``
per message, nothing between turns, ``<|im_start|>assistant<|im_sep|>`` as the generation
prompt. ``<|im_end|>`` (100265) is the EOS and stop token, ``<|dummy_85|>`` (100349) pads
(``tokenizer_config.json``), and no BOS is added. ``tokenize_messages`` equals
``apply_chat_template`` (``template_tokenizer``).
"""

import json
from typing import Any, Dict, Optional

from torchtune._errors import UserValueError
from torchtune.tokenizers import HuggingFaceBaseTokenizer
from torchtune.tokenizers._auto_tokenizer import (
    _proven_splits_at_spaces,
    ModelFolderTokenizer,
    template_tokenizer,
)
from torchtune.tokenizers._hf_tokenizer import (
    byte_level_bpe_json,
    CL100K_SPLIT_PATTERN,
    read_added_tokens,
    read_text,
)


def _phi4_special_tokens() -> Dict[str, int]:
    """cl100k_base's specials where Phi-4 keeps them, dummies filling the other ids."""
    named = {
        100257: "<|endoftext|>", 100258: "<|fim_prefix|>", 100259: "<|fim_middle|>",
        100260: "<|fim_suffix|>", 100264: "<|im_start|>", 100265: "<|im_end|>",
        100266: "<|im_sep|>", 100276: "<|endofprompt|>",
    }
    tokens, dummy = {}, 0
    for i in range(100_256, 100_352):
        if i in named:
            tokens[named[i]] = i
        else:
            tokens[f"<|dummy_{dummy}|>"] = i
            dummy += 1
    return tokens


PHI4_SPECIAL_TOKENS = _phi4_special_tokens()

# tokenizer_config.json of microsoft/phi-4, as published.
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if (message['role'] == 'system') %}"
    "{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'user') %}"
    "{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'assistant') %}"
    "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)


def phi4_tokenizer(
    vocab_path: Optional[str] = None,
    merges_path: Optional[str] = None,
    special_tokens_path: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template: Any = None,
    truncation_type: str = "right",
) -> ModelFolderTokenizer:
    """The Phi-4 tokenizer.

    Args:
        vocab_path (Optional[str]): ``vocab.json`` (with ``merges_path``), or the model's
            ``tokenizer.json``.
        merges_path (Optional[str]): ``merges.txt``, for a ``vocab.json``.
        special_tokens_path (Optional[str]): a ``tokenizer.json`` whose ``added_tokens``
            are the special tokens; None for Phi-4's.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this many ids.
        prompt_template (Optional[Any]): rewrites messages before the chat template (see
            ``resolve_prompt_template``); None for none.
        truncation_type (str): "right" (keep the start) or "left" (keep the end).

    Returns:
        ModelFolderTokenizer: no BOS, EOS ``<|im_end|>`` 100265, pad ``<|dummy_85|>``
        100349, ``vocab_size`` 100352.

    Raises:
        ValueError: if ``vocab_path`` is missing, or the files are not a byte-level BPE
            with Phi-4's special tokens at their ids.
    """
    if vocab_path is None:
        raise UserValueError("phi4_tokenizer: vocab_path is required (vocab.json or tokenizer.json)")
    added = [(t, i, True) for t, i in PHI4_SPECIAL_TOKENS.items()]
    if special_tokens_path is not None:
        added = read_added_tokens(str(special_tokens_path))
    if merges_path is not None:
        text = byte_level_bpe_json(
            str(vocab_path), str(merges_path), split_pattern=CL100K_SPLIT_PATTERN,
            added_tokens=added, nfc=False,
        )
    else:
        text = read_text(str(vocab_path), "tokenizer.json")
    try:
        data = json.loads(text)
    except ValueError:
        data = {}  # HuggingFaceBaseTokenizer names the fault
    base = HuggingFaceBaseTokenizer(
        str(vocab_path), bos_id=None, eos_id=PHI4_SPECIAL_TOKENS["<|im_end|>"],
        pad_id=PHI4_SPECIAL_TOKENS["<|dummy_85|>"], tokenizer_json=text,
        splits_at_spaces=_proven_splits_at_spaces(data),
    )
    return template_tokenizer(
        base,
        name="phi4_tokenizer",
        chat_template=PHI4_CHAT_TEMPLATE,
        control={t: i for t, i, special in added if special},
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|dummy_85|>",
        stop_tokens=["<|endoftext|>"],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
    )
