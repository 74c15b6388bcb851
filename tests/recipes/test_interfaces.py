"""Every built-in recipe class has the shape of its interface (structurally: no inheritance)."""

import importlib
import inspect

import pytest

from recipes.interfaces import EvalRecipeInterface, FTRecipeInterface
from torchtune._recipe_registry import get_all_recipes


def recipe_classes():
    for recipe in get_all_recipes():
        module = importlib.import_module(f"recipes.{recipe.file_path.removesuffix('.py')}")
        classes = [
            obj for name, obj in vars(module).items()
            if inspect.isclass(obj) and obj.__module__ == module.__name__ and "Recipe" in name
        ]
        assert len(classes) == 1, (recipe.name, classes)
        yield recipe.name, classes[0]


@pytest.mark.parametrize("name,cls", list(recipe_classes()), ids=lambda x: x if isinstance(x, str) else "")
def test_recipe_class_satisfies_interface(name, cls):
    training = any(kind in name for kind in ("finetune", "dpo"))
    interface = FTRecipeInterface if training else EvalRecipeInterface
    assert issubclass(cls, interface)
    assert interface not in cls.__mro__  # structural, not inherited
    for method in ("load_checkpoint", "setup", "train", "save_checkpoint", "cleanup"):
        if hasattr(interface, method):
            assert callable(getattr(cls, method))
