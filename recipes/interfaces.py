"""The interface every training recipe class follows.

It organises a recipe's code; it is not a way to share it. Recipes do not inherit from
it: `typing.Protocol` checks the shape (tests/recipes/test_interfaces.py), and each
recipe keeps its own copy of the code behind these five methods.
"""

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class FTRecipeInterface(Protocol):
    """A fine-tuning recipe: built from a config, then driven by ``recipe_main``::

        recipe = Recipe(cfg)
        recipe.setup(cfg)        # calls load_checkpoint, then builds every component
        recipe.train()           # the loop; calls save_checkpoint at epoch ends / every N steps
        recipe.cleanup()         # close loggers, tear down process groups
    """

    def load_checkpoint(self, cfg_checkpointer: Any) -> dict:
        """Read model weights (and, when resuming, the recipe state) via the checkpointer."""
        ...

    def setup(self, cfg: Any) -> None:
        """Build model, tokenizer, optimizer, loss, data and scheduler, in dependency order."""
        ...

    def train(self) -> None:
        """Run the training loop."""
        ...

    def save_checkpoint(self, epoch: int, step: Any = None) -> None:
        """Write the model and everything needed to continue exactly from here."""
        ...

    def cleanup(self) -> None:
        """Release what the recipe holds (loggers, process groups)."""
        ...


@runtime_checkable
class EvalRecipeInterface(Protocol):
    """An evaluation or generation recipe: ``setup(cfg)``, then its one action
    (``evaluate()`` or ``generate()``)."""

    def setup(self, cfg: Any) -> None:
        """Load the checkpoint and build the model, tokenizer and whatever the action needs."""
        ...
