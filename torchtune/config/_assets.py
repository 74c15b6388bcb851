"""``${assets:PATH}``: a file bundled with torchtune, wherever the package is installed.

The stories260K configs (the README's main job) read the bundled model, tokenizer and data.
A path relative to the repository (``assets/stories260K``) works only from its root; this
resolver gives the absolute path inside the installed package (``torchtune/assets``), so
the configs run from any folder, from a clone or a wheel alike.
"""

from pathlib import Path

import omegaconf
from omegaconf import OmegaConf

ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"


def bundled_asset(relative: str = "") -> str:
    """The absolute path of ``relative`` inside torchtune's bundled assets folder.

    Example:
        >>> bundled_asset("stories260K/tokenizer.model")  # doctest: +SKIP
        '/.../site-packages/torchtune/assets/stories260K/tokenizer.model'
    """
    return str(ASSETS_DIR / str(relative))


def _register() -> None:
    # OmegaConf 2.4 renamed register_new_resolver (now deprecated) to register_resolver,
    # the name 2.3 still uses for its old string-only API.
    major, minor = (int(p) for p in omegaconf.__version__.split(".")[:2])
    register = OmegaConf.register_resolver if (major, minor) >= (2, 4) else OmegaConf.register_new_resolver
    register("assets", bundled_asset)


if not OmegaConf.has_resolver("assets"):
    _register()
