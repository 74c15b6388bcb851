"""A model's own Hugging Face chat template: where it is found and how it is rendered.

Where
-----
As ``transformers`` loads a local model folder: a ``chat_template.jinja`` file wins over
the ``chat_template`` entry of ``tokenizer_config.json``; that entry is a string, or a list
of ``{"name", "template"}`` objects of which the one named "default" is used.

How
---
The template is untrusted code from the Hub, so it runs in jinja2's
``ImmutableSandboxedEnvironment`` with the environment ``transformers`` gives it
(``utils/chat_template_utils.py``, read as of transformers 5): ``trim_blocks`` and
``lstrip_blocks``, the ``loopcontrols`` extension, a ``{% generation %}`` block that just
renders its body (transformers uses it to track assistant text; we need no tracking),
``tojson`` as ``json.dumps`` without HTML escaping (``ensure_ascii=False`` and the
``indent``/``separators``/``sort_keys`` options), ``raise_exception(message)``,
``strftime_now(format)`` (the local time now, as transformers'), a ``dict`` global and a
``namespace`` that refuses underscore-prefixed names. Templates see ``messages``,
``tools=None``, ``documents=None``, ``add_generation_prompt`` and the named special tokens
(``bos_token``, ``eos_token`` ...), as ``apply_chat_template`` passes them.
"""

import json
import os
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from torchtune._errors import UserValueError
from torchtune.tokenizers._hf_tokenizer import read_text

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def find_chat_template(folder: str, config: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """The chat template of a model folder, as ``transformers`` picks it.

    Args:
        folder (str): the model folder.
        config (Mapping[str, Any]): its ``tokenizer_config.json`` ({} when absent).

    Returns:
        Optional[Tuple[str, str]]: the template's source and where it came from (for
        messages), or None when the folder has no template.

    Raises:
        ValueError: if ``chat_template`` in the config is neither a string nor a list of
            named templates with a "default".
    """
    jinja_path = os.path.join(folder, CHAT_TEMPLATE_FILE)
    if os.path.isfile(jinja_path):
        return read_text(jinja_path, CHAT_TEMPLATE_FILE), jinja_path
    where = os.path.join(folder, "tokenizer_config.json")
    template = config.get("chat_template")
    if template is None:
        return None
    if isinstance(template, str):
        return template, where
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        if isinstance(named.get("default"), str):
            return named["default"], f"{where} (chat_template 'default')"
        raise UserValueError(
            f"{where}: chat_template lists templates {sorted(map(str, named))} but none named "
            "'default'"
        )
    raise UserValueError(
        f"{where}: chat_template must be a string or a list of named templates, not "
        f"{type(template).__name__}"
    )


class ChatTemplate:
    """A compiled chat template and the variables ``apply_chat_template`` gives it.

    Args:
        source (str): the Jinja source.
        where (str): the file it came from, named in errors.
        variables (Mapping[str, Any]): extra template variables: the named special tokens
            (``bos_token`` ...) and any the caller adds (``enable_thinking``).

    Raises:
        ValueError: if the source is not valid Jinja.
    """

    def __init__(self, source: str, where: str, variables: Mapping[str, Any]):
        self.source = source
        self.where = where
        self.variables = dict(variables)
        self._compile()

    def _compile(self) -> None:
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise UserValueError(
                f"{self.where}: the chat template is not valid Jinja (line {e.lineno}): {e.message}"
            ) from None

    # A compiled template does not pickle (datasets pickles the tokenizer): recompile.
    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_template"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compile()

    def try_render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False
    ) -> Optional[str]:
        """The rendered text, or None if the template raises on these messages."""
        try:
            return self._render(messages, add_generation_prompt)
        except Exception:  # template code: raise_exception, undefined names, bad types
            return None

    def render(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False
    ) -> str:
        """Render a conversation.

        Args:
            messages (Sequence[Mapping[str, Any]]): ``{"role", "content"}`` dicts.
            add_generation_prompt (bool): end with the header of an assistant turn.

        Returns:
            str: the rendered text.

        Raises:
            ValueError: one line naming the first message whose conversation prefix the
                template rejects, and the template's own message.
        """
        try:
            return self._render(messages, add_generation_prompt)
        except Exception as e:  # template code: raise_exception, undefined names, bad types
            reason = " ".join(str(e).split()) or type(e).__name__
        # The first prefix the template rejects names the message at fault.
        index = len(messages) - 1
        for i in range(len(messages)):
            if self.try_render(messages[: i + 1]) is None:
                index = i
                break
        role = messages[index].get("role") if messages else None
        raise UserValueError(
            f"{self.where}: the chat template fails on message {index} (role {role!r}): {reason}"
        )

    def _render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool) -> str:
        return self._template.render(
            **self.variables,
            messages=[dict(m) for m in messages],
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
        )


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson escapes "<", ">", "&" and "'" for HTML; templates expect JSON.
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    # Looked up at call time, so tests can freeze the clock by patching ``datetime``.
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """``dict`` for templates without the class itself (no type-hackery from templates)."""

    def __call__(self, *args, **kwargs) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs) -> dict:
        return dict.fromkeys(*args, **kwargs)


def _namespace(*args, **kwargs) -> jinja2.utils.Namespace:
    """jinja2's ``namespace`` without underscore-prefixed names (CPython internals)."""
    attrs = dict(*args, **kwargs)
    for name in attrs:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store {name!r} on a namespace"
            )
    return jinja2.utils.Namespace(attrs)


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: renders the body unchanged."""

    tags = {"generation"}

    def parse(self, parser: "jinja2.parser.Parser") -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller) -> str:
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _namespace
    return env


def message_dicts(messages: Sequence[Any]) -> List[Dict[str, str]]:
    """``Message`` objects as the ``{"role", "content"}`` dicts templates read; torchtune's
    "ipython" role (a tool's output) is the "tool" role of Hugging Face templates."""
    return [
        {"role": "tool" if m.role == "ipython" else m.role, "content": m.content}
        for m in messages
    ]
