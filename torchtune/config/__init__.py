"""Configs: yaml files with `_component_` nodes, command-line overrides, validation."""

from torchtune.config._assets import bundled_asset
from torchtune.config._beside import beside
from torchtune.config._errors import ConfigError, InstantiationError
from torchtune.config._instantiate import instantiate, resolve_component
from torchtune.config._resolve import resolve_for_record
from torchtune.config._trust import untrusted_components
from torchtune.config._parse import apply_overrides, load_and_override, load_config, parse
from torchtune.config._validate import (
    Component,
    check_components,
    check_required,
    check_params,
    fill_defaults,
    validate,
)

__all__ = [
    "Component",
    "ConfigError",
    "InstantiationError",
    "apply_overrides",
    "bundled_asset",
    "check_components",
    "check_required",
    "check_params",
    "fill_defaults",
    "instantiate",
    "load_and_override",
    "load_config",
    "parse",
    "resolve_component",
    "resolve_for_record",
    "untrusted_components",
    "validate",
]
