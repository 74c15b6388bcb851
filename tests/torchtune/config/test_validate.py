"""Validation against a recipe's parameter dataclass and of `_component_` nodes."""

from dataclasses import dataclass
from typing import List, Optional

import pytest
from omegaconf import OmegaConf

from torchtune.config import Component, ConfigError, check_components, check_params, validate


@dataclass
class Params:
    model: Component
    epochs: int
    lr: float
    output_dir: str
    seed: Optional[int] = None
    columns: Optional[List[str]] = None
    enable_thing: bool = False


def good():
    return OmegaConf.create(
        {
            "model": {"_component_": "torch.nn.Linear", "in_features": 2, "out_features": 1},
            "epochs": 1,
            "lr": 1,  # an int is a fine float
            "output_dir": "/tmp/x",
            "seed": None,
            "columns": ["a"],
        }
    )


def test_good_config_passes():
    validate(good(), Params)


def test_all_problems_reported_at_once():
    cfg = good()
    del cfg["epochs"]
    cfg.lr = "fast"
    cfg.enable_thing = "yes"
    cfg.typo_key = 3
    cfg.model = {"_component_": "torch.nn.Linear", "in_feature": 2}
    with pytest.raises(ConfigError) as e:
        validate(cfg, Params)
    problems = e.value.problems
    text = "\n".join(problems)
    assert "epochs: missing required key" in text
    assert "lr: expected float, got 'fast'" in text
    assert "enable_thing: expected bool" in text
    assert "typo_key: unknown key" in text
    assert "model: got an unexpected keyword argument 'in_feature'" in text
    assert len(problems) == 5


def test_component_field_needs_component_node():
    cfg = good()
    cfg.model = {"in_features": 2}
    assert any("model: expected a `_component_` node" in p for p in check_params(cfg, Params))


def test_bool_is_not_int():
    cfg = good()
    cfg.epochs = True
    assert any(p.startswith("epochs: expected int") for p in check_params(cfg, Params))


def test_list_element_types():
    cfg = good()
    cfg.columns = ["a", 3]
    assert any(p.startswith("columns:") for p in check_params(cfg, Params))


def test_components_checked_without_building():
    cfg = OmegaConf.create(
        {
            "a": {"_component_": "torch.nn.Linearr"},
            "b": {"c": [{"_component_": "torch.optim.SGD", "lrr": 1}]},
            "d": {"_component_": "torch.optim.SGD", "lr": 1},  # params come from the recipe
        }
    )
    problems = check_components(cfg)
    assert len(problems) == 2
    assert problems[0].startswith("a._component_")
    assert problems[1].startswith("b.c[0]:") and "lrr" in problems[1]
