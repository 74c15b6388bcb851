"""The Gemma (1 and 2) tokenizer builder: Gemma's SentencePiece model and the Instruct
models' chat template (torchtune 0.6.1's builder name and first arguments).

Gemma's ``tokenizer.model`` holds 256,000 BPE pieces with byte fallback. ``<pad>`` 0,
``<eos>`` 1 and ``<bos>`` 2 are its control pieces, ``<unk>`` 3 its unknown piece, and the
chat tokens ``<start_of_turn>`` 106 and ``<end_of_turn>`` 107 are user-defined pieces of
the model itself (no added tokens past the vocabulary). The model adds no dummy-prefix
space and does not collapse whitespace: text encodes as it reads.

``tokenize_messages`` renders the template of google/gemma-7b-it and gemma-2-*-it
(``GEMMA_CHAT_TEMPLATE``) as transformers does (``template_tokenizer``): BOS, then
``<start_of_turn>{user|model}\\n{content, trimmed}<end_of_turn>\\n`` per message; the ids
equal ``apply_chat_template``'s. The template refuses a system message and roles that do
not alternate; either is a one-line error naming the message. The assistant learns its
trimmed content and ``<end_of_turn>``. Generation stops at ``<eos>`` or ``<end_of_turn>``
(the Instruct models' ``generation_config.json``).

torchtune 0.6.1 encoded each message's content as plain text between BOS and EOS, with no
turn markers; that is not the format the Instruct models were tuned on.
"""

from typing import Any, Optional

from torchtune._errors import UserValueError
from torchtune.tokenizers import SentencePieceTokenizer
from torchtune.tokenizers._auto_tokenizer import ModelFolderTokenizer, template_tokenizer

# tokenizer_config.json of google/gemma-7b-it and google/gemma-2-2b-it (the same text;
# llama.cpp keeps a copy as models/templates/google-gemma-2-2b-it.jinja). Its "\n" are
# newline characters inside the Jinja strings, as the JSON file decodes them.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def gemma_sentencepiece(path: str, builder: str) -> SentencePieceTokenizer:
    """Gemma's ``tokenizer.model``, checked to be one: it adds no dummy-prefix space.

    Raises:
        UserValueError: a model that adds one (not Gemma's).
    """
    backend = SentencePieceTokenizer(path)
    if backend.adds_dummy_prefix:
        raise UserValueError(
            f"{builder}: {path} is not a Gemma tokenizer.model: it adds SentencePiece's "
            "dummy-prefix space, which Gemma's does not"
        )
    return backend


def gemma_tokenizer(
    path: str,
    max_seq_len: Optional[int] = None,
    prompt_template: Any = None,
    truncation_type: str = "right",
) -> ModelFolderTokenizer:
    """The Gemma and Gemma 2 tokenizer: ``tokenizer.model`` and the Instruct chat format.

    Args:
        path (str): the model's ``tokenizer.model``.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this many ids.
        prompt_template (Optional[Any]): rewrites messages before the chat template (see
            ``resolve_prompt_template``); None for none.
        truncation_type (str): "right" (keep the start) or "left" (keep the end).

    Returns:
        ModelFolderTokenizer: BOS ``<bos>`` 2, EOS ``<eos>`` 1, pad ``<pad>`` 0, stop
        tokens [1, 107], ``vocab_size`` 256000 (ids as in Gemma's own file).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a Gemma ``tokenizer.model``.
    """
    backend = gemma_sentencepiece(path, "gemma_tokenizer")
    return template_tokenizer(
        backend,
        name="gemma_tokenizer",
        chat_template=GEMMA_CHAT_TEMPLATE,
        control=backend.piece_ids(["<start_of_turn>", "<end_of_turn>"], "gemma_tokenizer"),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        stop_tokens=["<end_of_turn>"],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
    )
