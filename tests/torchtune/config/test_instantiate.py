"""`instantiate`: nested components, positional args, overrides and error messages."""

import pytest
import torch
from omegaconf import OmegaConf

from torchtune.config import InstantiationError, instantiate


def make_pair(first, second, scale=1.0):
    return (first, second, scale)


def test_builds_with_config_kwargs():
    cfg = OmegaConf.create({"_component_": "torch.nn.Linear", "in_features": 3, "out_features": 2})
    layer = instantiate(cfg)
    assert isinstance(layer, torch.nn.Linear) and layer.weight.shape == (2, 3)


def test_positional_args_and_keyword_overrides():
    cfg = OmegaConf.create({"_component_": "torch.optim.SGD", "lr": 0.5})
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = instantiate(cfg, params, lr=0.25)
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["lr"] == 0.25


def test_nested_components_and_interpolation():
    cfg = OmegaConf.create(
        {
            "width": 5,
            "outer": {
                "_component_": f"{__name__}.make_pair",
                "first": {"_component_": "torch.nn.Linear", "in_features": "${width}", "out_features": 1},
                "second": [1, {"k": "${width}"}],
            },
        }
    )
    first, second, scale = instantiate(cfg.outer)
    assert isinstance(first, torch.nn.Linear) and first.in_features == 5
    assert second == [1, {"k": 5}] and isinstance(second, list)
    assert scale == 1.0


def test_none_config_is_none():
    assert instantiate(None) is None


def test_unknown_path_names_path_and_nearest():
    cfg = OmegaConf.create({"opt": {"_component_": "torch.optim.AdamX", "lr": 1}})
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg.opt)
    msg = str(e.value)
    assert "opt._component_" in msg and "torch.optim.AdamX" in msg
    assert "torch.optim.Adam" in msg  # nearest existing names
    assert "\n" not in msg


def test_unknown_module_names_path():
    cfg = OmegaConf.create({"m": {"_component_": "torchtune.modelz.llama2"}})
    with pytest.raises(InstantiationError, match="torchtune.models"):
        instantiate(cfg.m)


def test_unexpected_argument_names_key_and_signature():
    cfg = OmegaConf.create({"model": {"_component_": "torch.nn.Linear", "in_features": 3, "out_features": 2, "bogus": 1}})
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg.model)
    msg = str(e.value)
    assert msg.startswith("model:") and "bogus" in msg and "in_features" in msg


def test_missing_argument_names_key_and_signature():
    cfg = OmegaConf.create({"pair": {"_component_": f"{__name__}.make_pair", "first": 1}})
    with pytest.raises(InstantiationError) as e:
        instantiate(cfg.pair)
    msg = str(e.value)
    assert msg.startswith("pair:") and "second" in msg and "make_pair(first, second, scale=1.0)" in msg


def test_node_without_component():
    with pytest.raises(InstantiationError, match="_component_"):
        instantiate(OmegaConf.create({"a": 1}))
