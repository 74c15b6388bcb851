"""The Phi-3 mini tokenizer builder: Llama 2's SentencePiece model with Phi-3's added
tokens and the Instruct models' chat template (torchtune 0.6.1's signature).

Phi-3's ``tokenizer.model`` is Llama 2's 32,000 pieces; ``tokenizer_config.json`` adds
``<|endoftext|>`` (32000, the EOS and pad) and the chat tokens 32001-32010, all special and,
but for ``<|endoftext|>``, ``rstrip``: they eat the whitespace after them, so the "\\n" the
template writes after ``<|user|>`` or ``<|end|>`` never reaches the ids. It sets
``add_bos_token: false`` and ``legacy: false``. ``tokenize_messages`` renders the published
template with those settings exactly as transformers does (``template_tokenizer``); the
ids equal ``apply_chat_template``'s. Generation stops at ``<|endoftext|>``,
``<|assistant|>`` or ``<|end|>`` (the models' ``generation_config.json``).

torchtune 0.6.1's own format differed (a BOS before each user turn, "\\n" ids after the
role tokens, an EOS after each assistant turn); it is not what the models were tuned on.
"""

from typing import Any, Dict, Optional

from torchtune.tokenizers import SentencePieceTokenizer
from torchtune.tokenizers._auto_tokenizer import ModelFolderTokenizer, template_tokenizer
from torchtune.tokenizers._hf_tokenizer import read_added_tokens

# tokenizer_config.json of microsoft/Phi-3-mini-4k-instruct (Phi-3.5-mini has the same).
PHI3_SPECIAL_TOKENS: Dict[str, int] = {
    "<|endoftext|>": 32000,
    "<|assistant|>": 32001,
    "<|placeholder1|>": 32002,
    "<|placeholder2|>": 32003,
    "<|placeholder3|>": 32004,
    "<|placeholder4|>": 32005,
    "<|system|>": 32006,
    "<|end|>": 32007,
    "<|placeholder5|>": 32008,
    "<|placeholder6|>": 32009,
    "<|user|>": 32010,
}
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def phi3_mini_tokenizer(
    path: str,
    special_tokens_path: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template: Any = None,
    truncation_type: str = "right",
) -> ModelFolderTokenizer:
    """The Phi-3 (mini, medium; 3.5 mini) tokenizer: ``tokenizer.model`` and the chat format.

    Args:
        path (str): the model's ``tokenizer.model``.
        special_tokens_path (Optional[str]): a ``tokenizer.json`` whose ``added_tokens``
            are the special tokens; None for Phi-3's (``PHI3_SPECIAL_TOKENS``).
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this many ids.
        prompt_template (Optional[Any]): rewrites messages before the chat template (see
            ``resolve_prompt_template``); None for none.
        truncation_type (str): "right" (keep the start) or "left" (keep the end).

    Returns:
        ModelFolderTokenizer: no BOS, EOS and pad ``<|endoftext|>`` 32000, stop tokens
        [32000, 32001, 32007], ``vocab_size`` 32011.
    """
    special = dict(PHI3_SPECIAL_TOKENS)
    if special_tokens_path is not None:
        special = {text: i for text, i, is_special in read_added_tokens(special_tokens_path)
                   if is_special and i >= 32000}
    return template_tokenizer(
        SentencePieceTokenizer(path),
        name="phi3_mini_tokenizer",
        chat_template=PHI3_CHAT_TEMPLATE,
        control=special,
        rstrip=[t for t in special if t != "<|endoftext|>"],
        bos_token=None,
        eos_token="<|endoftext|>",
        stop_tokens=["<|assistant|>", "<|end|>"],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
    )
