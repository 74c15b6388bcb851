from dataclasses import dataclass
from typing import List, Literal, Optional, Protocol, Sequence

Role = Literal["system", "user", "assistant", "ipython"]
ROLES = ("system", "user", "assistant", "ipython")


@dataclass(frozen=True)
class Message:
    """One turn of a conversation.

    Args:
        role (str): "system", "user", "assistant" or "ipython" (a tool's output).
        content (str): the text of the turn.
        masked (Optional[bool]): leave the turn out of the loss; None (the default) masks
            every role but "assistant". (torchtune defaults to False; a default that
            follows the role means a plain ``Message("user", ...)`` is never learned.)
        eot (bool): the turn ends the model's turn (Llama 3: ``<|eot_id|>``); False for a
            message that waits for a tool's result (``<|eom_id|>``).

    Raises:
        ValueError: if ``role`` is not one of the four roles.
    """

    role: Role
    content: str
    masked: Optional[bool] = None
    eot: bool = True

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"message role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.masked is None:
            # frozen: fill the role's default through object.__setattr__
            object.__setattr__(self, "masked", self.role != "assistant")


class ChatFormat(Protocol):
    """Turns a conversation into the exact text segments a model was trained on.

    ``format`` returns alternating "user" and "assistant" messages whose ``content`` is the
    text to encode as is: ``chat_dataset`` encodes each user segment with BOS and each
    assistant segment with EOS, and learns only the assistant segments unless
    ``train_on_input``.
    """

    @classmethod
    def format(cls, messages: Sequence[Message]) -> List[Message]:
        ...


class Llama2ChatFormat:
    """The Llama 2 chat format, as in Meta's ``Llama.chat_completion`` (meta-llama/llama,
    ``llama/generation.py``)::

        <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user_1} [/INST] {answer_1} </s>
        <s>[INST] {user_2} [/INST] {answer_2} </s>...

    An optional system message is folded into the first user message; contents are
    stripped; each answer is followed by a space, as in Meta's ``f"... {E_INST} {answer} "``.
    Encoding "[INST] ... [/INST]" and "{answer} " separately (the answer with
    SentencePiece's usual dummy-prefix space) gives exactly the ids of Meta's one encode per
    turn, because Llama 2 pieces never span the space before a word.
    """

    B_INST, E_INST = "[INST]", "[/INST]"
    B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"

    @classmethod
    def format(cls, messages: Sequence[Message]) -> List[Message]:
        """Format a conversation.

        Args:
            messages (Sequence[Message]): an optional system message, then user and
                assistant messages alternating, starting with a user message.

        Returns:
            List[Message]: the user segments ("[INST] ... [/INST]") and assistant segments.

        Raises:
            ValueError: if the roles are out of order.
        """
        messages = list(messages)
        if messages and messages[0].role == "system":
            if len(messages) < 2 or messages[1].role != "user":
                raise ValueError("a system message must be followed by a user message")
            content = cls.B_SYS + messages[0].content + cls.E_SYS + messages[1].content
            messages = [Message("user", content)] + messages[2:]
        if not messages:
            raise ValueError("the conversation has no user message")
        out = []
        for i, m in enumerate(messages):
            expected = "user" if i % 2 == 0 else "assistant"
            if m.role != expected:
                raise ValueError(
                    f"message {i} has role {m.role!r}, expected {expected!r} (after an "
                    "optional system message, user and assistant must alternate)"
                )
            if m.role == "user":
                out.append(Message("user", f"{cls.B_INST} {m.content.strip()} {cls.E_INST}"))
            else:
                out.append(Message("assistant", f"{m.content.strip()} "))
        return out
