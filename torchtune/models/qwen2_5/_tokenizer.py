"""The Qwen 2.5 tokenizer: Qwen 2's (``torchtune/models/qwen2/_tokenizer.py``: files, chat
format, truncation) with Qwen 2.5's added tokens and default system prompt.

Special tokens
--------------
Qwen has no BOS (``add_bos_token: false``; ``bos_id`` is None and ``encode`` adds none).
``<|endoftext|>`` 151643 pads and ends base-model documents; ``<|im_end|>`` 151645 ends a
chat turn and is the Instruct models' EOS (``tokenizer_config.json``'s ``eos_token``), so
``eos_id`` is 151645 and ``stop_tokens`` is ``[151645, 151643]`` (generation stops at
either, as the models' ``generation_config.json`` lists). ``<|im_start|>`` 151644 opens a
turn. The ids are read from the file and checked against these.

Qwen 2.5 adds 19 tokens at 151646..151664 (``QWEN2_5_ADDED_TOKENS``, with the ``special``
flags of its ``tokenizer.json``: the tool-call and FIM tokens are ordinary added words);
they matter when the tokenizer is built from ``vocab.json`` + ``merges.txt``, which do not
hold them.
"""

from functools import partial
from typing import Optional

from torchtune.models.qwen2._tokenizer import (
    QWEN2_ADDED_TOKENS,
    QWEN2_SPECIAL_IDS,
    qwen_tokenizer_args,
    Qwen2Tokenizer,
)

QWEN2_5_SPECIAL_IDS = QWEN2_SPECIAL_IDS

QWEN2_5_ADDED_TOKENS = QWEN2_ADDED_TOKENS + [
    (text, 151646 + k, special)
    for k, (text, special) in enumerate(
        [
            ("<|object_ref_start|>", True), ("<|object_ref_end|>", True),
            ("<|box_start|>", True), ("<|box_end|>", True),
            ("<|quad_start|>", True), ("<|quad_end|>", True),
            ("<|vision_start|>", True), ("<|vision_end|>", True),
            ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
            ("<tool_call>", False), ("</tool_call>", False),
            ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
            ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
            ("<|repo_name|>", False), ("<|file_sep|>", False),
        ]
    )
]  # fmt: skip

QWEN2_5_DEFAULT_SYSTEM_PROMPT = (
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
)


# Qwen 2.5's tokenizer is Qwen 2's with other data: its added tokens and default system
# prompt are arguments, not a class.
Qwen2_5Tokenizer = partial(
    Qwen2Tokenizer,
    default_system_prompt=QWEN2_5_DEFAULT_SYSTEM_PROMPT,
    added_tokens=QWEN2_5_ADDED_TOKENS,
)
Qwen2_5Tokenizer.__doc__ = (
    "``Qwen2Tokenizer`` with Qwen 2.5's added tokens and default system prompt (\"You are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.\"); the same arguments."
)


def qwen2_5_tokenizer(
    path: str,
    merges_file: Optional[str] = None,
    special_tokens_path: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template=None,
    truncation_type: str = "right",
    default_system_prompt: Optional[str] = QWEN2_5_DEFAULT_SYSTEM_PROMPT,
) -> Qwen2Tokenizer:
    """The Qwen 2.5 tokenizer (all sizes, base and Instruct, Coder and Math share it).

    torchtune 0.6.1's signature, plus ``default_system_prompt``.

    Args:
        path (str): the model's ``tokenizer.json``, or its ``vocab.json`` with ``merges_file``.
        merges_file (Optional[str]): ``merges.txt``, when ``path`` is a ``vocab.json``.
        special_tokens_path (Optional[str]): a ``tokenizer.json`` whose ``added_tokens`` are
            the special tokens; None for Qwen 2.5's 22.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this length.
        prompt_template (Optional[Any]): a dotted path, a ``{role: [prepend, append]}``
            mapping or None (``resolve_prompt_template``).
        truncation_type (str): "right" (keep the start) or "left" (keep the end).
        default_system_prompt (Optional[str]): inserted when a conversation has no system
            message first, as the Instruct chat template does; None for none (0.6.1).

    Returns:
        Qwen2Tokenizer: with Qwen 2.5's added tokens; no BOS, eos ``<|im_end|>`` 151645,
        pad ``<|endoftext|>`` 151643, stop tokens [151645, 151643].
    """
    return Qwen2_5Tokenizer(
        path,
        merges_file,
        qwen_tokenizer_args(special_tokens_path, truncation_type),
        max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
        default_system_prompt=default_system_prompt,
    )
