"""torchtune: a native-PyTorch library for fine-tuning LLMs.

Importing the package has no side effects; submodules are imported on use.
"""

from torchtune._errors import UserError, UserFileNotFoundError, UserOSError, UserValueError

__version__ = "0.1.0"

__all__ = ["UserError", "UserFileNotFoundError", "UserOSError", "UserValueError"]
