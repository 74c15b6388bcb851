"""Validation against a recipe's parameter dataclass and of `_component_` nodes."""

from dataclasses import dataclass
from typing import List, Optional

import pytest
from omegaconf import OmegaConf

from torchtune.config import (
    Component,
    ConfigError,
    check_components,
    check_params,
    fill_defaults,
    validate,
)


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


def test_keys_with_defaults_may_be_left_out_and_are_filled_in():
    cfg = good()
    del cfg["seed"], cfg["columns"]
    validate(cfg, Params)
    with pytest.raises(Exception):
        cfg.enable_thing  # what a recipe reading the key met before fill_defaults
    fill_defaults(cfg, Params)
    assert cfg.seed is None and cfg.columns is None and cfg.enable_thing is False
    assert cfg.epochs == 1  # keys the config has are left alone


def test_interpolated_top_level_keys_are_accepted():
    cfg = good()
    cfg.model_dir = "/models/x"
    cfg.output_dir = "${model_dir}/out"
    cfg.tag = "run"
    cfg.model.name = "${tag}"
    cfg.home = "/h"
    cfg.where = "${oc.env:HOME_DIR_UNSET,/tmp}"  # a resolver names no key: where stays unknown
    problems = check_params(cfg, Params)
    assert not [p for p in problems if p.startswith(("model_dir", "tag"))], problems
    assert [p.split(":")[0] for p in problems] == ["home", "where"]


def test_unknown_key_names_the_nearest_known_key():
    cfg = good()
    cfg.epoch = 3
    (problem,) = check_params(cfg, Params)
    assert problem.startswith("epoch: unknown key for Params (did you mean 'epochs'?")
