"""A run's config as written beside its logs: resolved, minus what the environment holds.

``${oc.env:VAR}`` (OmegaConf's resolver) reads an environment variable when the config is
resolved, the usual way to keep a secret such as an API token out of a yaml file. The
config a run records must not bring the secret back into a file, so every such value,
and every value that interpolates one, is recorded as ``<env:VAR>``.
"""

from typing import Any

from omegaconf import DictConfig, OmegaConf

_ENV_START = "${oc.env:"


def _mask_env(text: str) -> str:
    """``"a ${oc.env:X,default} b"`` -> ``"a <env:X> b"`` (nested braces in a default too)."""
    out, i = [], 0
    while (start := text.find(_ENV_START, i)) != -1:
        depth, j = 0, start
        while j < len(text):  # find the brace that closes this interpolation
            if text.startswith("${", j):
                depth, j = depth + 1, j + 2
                continue
            if text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        name = text[start + len(_ENV_START) : j].split(",")[0].strip()
        out += [text[i:start], f"<env:{name}>"]
        i = j + 1
    out.append(text[i:])
    return "".join(out)


def _mask_tree(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _mask_tree(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask_tree(v) for v in node]
    if isinstance(node, str) and _ENV_START in node:
        return _mask_env(node)
    return node


def resolve_for_record(cfg: Any) -> Any:
    """``cfg`` as plain dicts and lists with interpolations resolved, except that values
    taken from the environment (``${oc.env:VAR}``, directly or through another key) are
    replaced by ``<env:VAR>``.

    Args:
        cfg (Any): a DictConfig, or anything else (returned unchanged).

    Returns:
        Any: what metric loggers record as the run's config.

    Example:
        >>> cfg = OmegaConf.create({"token": "${oc.env:HF_TOKEN}", "url": "x?t=${token}"})
        >>> resolve_for_record(cfg)
        {'token': '<env:HF_TOKEN>', 'url': 'x?t=<env:HF_TOKEN>'}
    """
    if not isinstance(cfg, DictConfig):
        return cfg
    masked = _mask_tree(OmegaConf.to_container(cfg, resolve=False))
    return OmegaConf.to_container(OmegaConf.create(masked), resolve=True)
