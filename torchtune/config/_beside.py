"""``${beside:FOLDER,SUFFIX}``: a folder next to another, named after it.

The ``hf/*`` configs write their output beside the model folder the user names
(``model_dir=/models/SmolLM2-135M`` gives ``/models/SmolLM2-135M-lora``), so one key is all
a run needs. A trailing slash on the folder is dropped first: ``${model_dir}-lora`` would
put ``/models/SmolLM2-135M/-lora`` inside the model folder, next to the inputs.
"""

import os

import omegaconf
from omegaconf import OmegaConf

from torchtune._errors import UserValueError


def beside(folder: str, suffix: str) -> str:
    """``FOLDER-SUFFIX`` as a sibling of ``folder``.

    Example:
        >>> beside("/models/SmolLM2-135M/", "lora")
        '/models/SmolLM2-135M-lora'
    """
    folder = os.path.normpath(os.path.expanduser(str(folder)))
    if os.path.basename(folder) in ("", ".", "..", os.sep):
        raise UserValueError(
            f"model_dir {folder!r} names no folder to write beside; give the model folder's path"
        )
    return f"{folder}-{suffix}"


def _register() -> None:
    major, minor = (int(p) for p in omegaconf.__version__.split(".")[:2])
    register = OmegaConf.register_resolver if (major, minor) >= (2, 4) else OmegaConf.register_new_resolver
    register("beside", beside)


if not OmegaConf.has_resolver("beside"):
    _register()
