"""`untrusted_components`: what a config would import from outside torchtune's world."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from torchtune.config import load_config, untrusted_components
from torchtune.config._trust import trusted_packages

CONFIGS = Path(__file__).resolve().parents[3] / "recipes" / "configs"


def components(**paths):
    return OmegaConf.create({key: {"_component_": path} for key, path in paths.items()})


@pytest.mark.parametrize(
    "path",
    [
        "os.system",
        "subprocess.run",
        "builtins.eval",
        "torch.os.system",  # walks through the os module that torch imports
        "torchtune.config._instantiate.importlib.import_module",
        "test.support.os_helper.rmtree",  # a wheel's stray "test" folder is no licence
        "functools.partial",
        "no_such_module.build",  # listed by its name even when it does not import
    ],
)
def test_code_from_outside_is_listed(path):
    assert untrusted_components(components(model=path)) == [("model._component_", path)]


@pytest.mark.parametrize(
    "path",
    [
        "torchtune.models.llama2.lora_llama2_7b",
        "torchtune.models.llama2.qlora_llama2_7b",  # a functools.partial of a torchtune builder
        "torch.optim.AdamW",
        "torch.nn.functional.relu",
        "torchao.dtypes.to_nf4",
        "huggingface_hub.snapshot_download",  # distribution huggingface-hub
        "numpy.zeros",
    ],
)
def test_torchtune_and_its_dependencies_are_trusted(path):
    assert untrusted_components(components(model=path)) == []


def test_trusted_names_come_from_the_installed_requirements():
    trusted = trusted_packages()
    assert {"torchtune", "recipes", "torch", "torchao", "huggingface_hub", "omegaconf"} <= trusted
    # Optional extras (tensorboard) and the standard library are not.
    assert not {"tensorboard", "os", "subprocess", "builtins", "test"} & trusted


def test_keys_name_where_each_component_sits():
    cfg = OmegaConf.create(
        {
            "_component_": "os.getcwd",
            "loss": {"_component_": "torch.nn.CrossEntropyLoss"},
            "hooks": [{"_component_": "subprocess.run"}, {"inner": {"_component_": "os.system"}}],
        }
    )
    assert untrusted_components(cfg) == [
        ("_component_", "os.getcwd"),
        ("hooks[0]._component_", "subprocess.run"),
        ("hooks[1].inner._component_", "os.system"),
    ]


def test_every_shipped_config_imports_only_trusted_code():
    configs = sorted(CONFIGS.rglob("*.yaml"))
    assert configs
    listed = {p.relative_to(CONFIGS): untrusted_components(load_config(str(p))) for p in configs}
    assert {name: found for name, found in listed.items() if found} == {}
