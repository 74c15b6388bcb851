"""The ``prompt_template`` argument of the tokenizer builders, as torchtune 0.6.1 takes it.

A prompt template rewrites a conversation before the tokenizer renders it in the model's
chat format: it wraps each message's content in text tags for its role ("Question: " ...
"\\n\\nAnswer: "). The tags are ordinary text, encoded with the content. 0.6.1 configs name
one as a dotted path, or give a ``{role: [prepend, append]}`` mapping, or ``null``.

This library has no prompt-template classes of its own; the dotted paths of 0.6.1's
built-in templates resolve through ``TEMPLATES_061`` to the same tags, and any other
dotted path is imported and called with no arguments (as 0.6.1 does), which must give a
callable ``messages -> messages``.
"""

import dataclasses
from typing import Any, Callable, List, Mapping, Optional, Sequence

from torchtune._errors import UserValueError
from torchtune.data import Llama2ChatFormat, Message

PromptTemplate = Callable[[List[Message]], List[Message]]

ROLES = ("system", "user", "assistant", "ipython")


class RoleTagTemplate:
    """Wrap each message's content in the (prepend, append) tags of its role.

    Args:
        template (Mapping[str, Tuple[str, str]]): role to its two tags; roles left out
            are unchanged.

    Raises:
        ValueError: if a role is unknown or its value is not two strings.

    Example:
        >>> t = RoleTagTemplate({"user": ("Question: ", "\\n\\nAnswer: ")})
        >>> t([Message("user", "Why?")])[0].content
        'Question: Why?\\n\\nAnswer: '
    """

    def __init__(self, template: Mapping[str, Sequence[str]]):
        tags = {}
        for role, pair in template.items():
            if role not in ROLES:
                raise UserValueError(
                    f"prompt_template: role {role!r} is not one of {', '.join(ROLES)}"
                )
            pair = tuple(pair) if not isinstance(pair, str) else (pair,)
            if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise UserValueError(
                    f"prompt_template: {role!r} must map to [prepend, append] strings, "
                    f"not {pair!r}"
                )
            tags[role] = pair
        self.template = tags

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> List[Message]:
        out = []
        for m in messages:
            if m.role in self.template:
                prepend, append = self.template[m.role]
                m = dataclasses.replace(m, content=prepend + m.content + append)
            out.append(m)
        return out

    def __repr__(self) -> str:
        return f"RoleTagTemplate({self.template!r})"


class Llama2ChatTemplate:
    """0.6.1's ``torchtune.models.llama2.Llama2ChatTemplate``: ``Llama2ChatFormat``'s
    ``[INST] ... [/INST]`` tags, the system message folded into the first user turn."""

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> List[Message]:
        return Llama2ChatFormat.format(messages)


class MistralChatTemplate:
    """0.6.1's ``torchtune.models.mistral.MistralChatTemplate``: each user turn wrapped in
    ``[INST] `` and `` [/INST] ``, as the Mistral 7B Instruct template writes it; Mistral
    has no system role."""

    def __call__(self, messages: Sequence[Message], inference: bool = False) -> List[Message]:
        if any(m.role == "system" for m in messages):
            raise UserValueError("system messages are not supported by MistralChatTemplate")
        return RoleTagTemplate({"user": ("[INST] ", " [/INST] ")})(messages)


# 0.6.1's built-in templates by dotted path (torchtune/data/_prompt_templates.py and
# models/llama2/_prompt_template.py of that release).
TEMPLATES_061 = {
    "torchtune.data.GrammarErrorCorrectionTemplate": {
        "user": ("Correct this to standard English: ", "\n---\nCorrected: ")
    },
    "torchtune.data.SummarizeTemplate": {
        "user": ("Summarize this dialogue:\n", "\n---\nSummary:\n")
    },
    "torchtune.data.QuestionAnswerTemplate": {"user": ("Question: ", "\n\nAnswer: ")},
    "torchtune.models.llama2.Llama2ChatTemplate": Llama2ChatTemplate,
    "torchtune.models.mistral.MistralChatTemplate": MistralChatTemplate,
}


def resolve_prompt_template(value: Any) -> Optional[PromptTemplate]:
    """Turn a builder's ``prompt_template`` argument into a template, or None.

    Args:
        value (Any): None; a dotted path (0.6.1's built-in names, or any importable
            callable that, called with no arguments, returns a template); a mapping of
            role to ``[prepend, append]``; or a template object (callable on messages).

    Returns:
        Optional[PromptTemplate]: the template, None for none.

    Raises:
        ValueError: naming ``prompt_template`` and the value, if it cannot be resolved.
    """
    if value is None:
        return None
    if isinstance(value, str):
        known = TEMPLATES_061.get(value)
        if isinstance(known, dict):
            return RoleTagTemplate(known)
        if known is not None:
            return known()
        if value == "torchtune.data.ChatMLTemplate":
            raise UserValueError(
                "prompt_template: 'torchtune.data.ChatMLTemplate' is not supported: the Qwen "
                "tokenizers write ChatML themselves; use null"
            )
        # Imported here: torchtune.config is not needed unless a config names a template.
        from torchtune.config._instantiate import resolve_component

        template = resolve_component(value, key="prompt_template")()
        if not callable(template):
            raise UserValueError(
                f"prompt_template: {value!r}() returned {type(template).__name__}, "
                "not a callable taking a list of messages"
            )
        return template
    if isinstance(value, Mapping):
        return RoleTagTemplate(value)
    if callable(value):
        return value
    raise UserValueError(
        "prompt_template must be null, a dotted path or a {role: [prepend, append]} "
        f"mapping, not {type(value).__name__} {value!r}"
    )


def apply_prompt_template(
    template: Optional[PromptTemplate], messages: Sequence[Message]
) -> Sequence[Message]:
    """``template(messages)``, or the messages as they are when there is no template."""
    return messages if template is None else template(list(messages))
