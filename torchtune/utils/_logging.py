"""Logging set-up shared by recipes and the CLI."""

import logging
from typing import Optional


def get_logger(level: Optional[str] = None) -> logging.Logger:
    """The ``torchtune`` logger, printing ``LEVEL:torchtune: message`` to stderr once.

    Args:
        level (Optional[str]): e.g. "INFO" or "DEBUG"; None leaves the level unchanged.

    Returns:
        logging.Logger: the shared logger.
    """
    logger = logging.getLogger("torchtune")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    if level is not None:
        logger.setLevel(getattr(logging, level.upper()))
    return logger
