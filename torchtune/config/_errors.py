"""Errors raised while reading, validating and instantiating configs."""

from torchtune._errors import UserValueError


class ConfigError(UserValueError):
    """A config problem a user must fix. Each line of the message names one fault.

    Args:
        problems (list[str] | str): one message per fault.
    """

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InstantiationError(ConfigError):
    """A `_component_` node could not be resolved or called."""
