"""The Gemma 3 tokenizer builder: Gemma 3's SentencePiece model and the Instruct models'
chat template.

Gemma 3's ``tokenizer.model`` (the same file for every size) holds 262,144 BPE pieces
with byte fallback, laid out as Gemma's: control pieces ``<pad>`` 0, ``<eos>`` 1,
``<bos>`` 2, unknown ``<unk>`` 3, and user-defined pieces of the model itself for the
chat tokens ``<start_of_turn>`` 105 and ``<end_of_turn>`` 106 and the image delimiters
``<start_of_image>`` 255999 and ``<end_of_image>`` 256000. No dummy-prefix space, no
whitespace folding. ``<image_soft_token>`` (262144), which the multimodal processor puts
in place of an image, is an added token past the model's pieces; the text template never
writes it, and ``vocab_size`` stays 262144 (the 4B-27B embeddings have 64 rows more).

``tokenize_messages`` renders the template of google/gemma-3-*-it (``GEMMA3_CHAT_TEMPLATE``)
as transformers does (``template_tokenizer``): BOS, then
``<start_of_turn>{user|model}\\n{content, trimmed}<end_of_turn>\\n`` per message, with a
system message's content and a blank line put at the start of the first user turn. The ids
equal ``apply_chat_template``'s. Roles after the system message must alternate (a one-line
error names the message). The assistant learns its trimmed content and ``<end_of_turn>``.
Generation stops at ``<eos>`` or ``<end_of_turn>`` (the Instruct models'
``generation_config.json``: ``eos_token_id`` [1, 106]).
"""

from typing import Any, Optional

from torchtune._errors import UserValueError
from torchtune.tokenizers import SentencePieceTokenizer
from torchtune.tokenizers._auto_tokenizer import ModelFolderTokenizer, template_tokenizer

# chat_template of google/gemma-3-*-it (tokenizer_config.json and chat_template.json),
# as transformers' Gemma 3 converter writes it (models/gemma3/convert_gemma3_weights.py).
# Its "\n" inside Jinja strings are newline characters, as the JSON file decodes them.
GEMMA3_CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# The pieces the template writes besides BOS (user-defined pieces, so named here).
_TEMPLATE_PIECES = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"]


def gemma3_tokenizer(
    path: str,
    max_seq_len: Optional[int] = None,
    prompt_template: Any = None,
    truncation_type: str = "right",
) -> ModelFolderTokenizer:
    """The Gemma 3 tokenizer: ``tokenizer.model`` and the Instruct chat format.

    Args:
        path (str): the model's ``tokenizer.model``.
        max_seq_len (Optional[int]): cut ``tokenize_messages`` output to this many ids.
        prompt_template (Optional[Any]): rewrites messages before the chat template (see
            ``resolve_prompt_template``); None for none.
        truncation_type (str): "right" (keep the start) or "left" (keep the end).

    Returns:
        ModelFolderTokenizer: BOS ``<bos>`` 2, EOS ``<eos>`` 1, pad ``<pad>`` 0, stop
        tokens [1, 106], ``vocab_size`` 262144 (ids as in Gemma 3's own file).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if ``path`` is not a Gemma 3 ``tokenizer.model``.
    """
    backend = SentencePieceTokenizer(path)
    if backend.adds_dummy_prefix:  # Gemma's model encodes text as it reads
        raise UserValueError(
            f"gemma3_tokenizer: {path} is not a Gemma tokenizer.model: it adds "
            "SentencePiece's dummy-prefix space, which Gemma's does not"
        )
    return template_tokenizer(
        backend,
        name="gemma3_tokenizer",
        chat_template=GEMMA3_CHAT_TEMPLATE,
        control=backend.piece_ids(_TEMPLATE_PIECES, "gemma3_tokenizer"),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        stop_tokens=["<end_of_turn>"],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        truncation_type=truncation_type,
    )
