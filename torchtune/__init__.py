"""torchtune: a native-PyTorch library for fine-tuning LLMs.

Importing the package has no side effects; submodules are imported on use.
"""

from torchtune._errors import UserError, UserFileNotFoundError, UserOSError, UserValueError



def _package_version() -> str:
    """The installed package's version; pyproject.toml's when run from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchtune")
    except PackageNotFoundError:
        return "0.1.0"


__version__ = _package_version()

__all__ = ["UserError", "UserFileNotFoundError", "UserOSError", "UserValueError"]
