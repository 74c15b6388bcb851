"""torchtune: a native-PyTorch library for fine-tuning LLMs.

Importing the package has no side effects; submodules are imported on use.
"""

__version__ = "0.1.0"
