"""The JSON files beside the weights, read and checked when a checkpointer is built.

``config.json`` (transformers), ``params.json`` (Meta), an HF ``*.index.json`` and
``.tune_download.json`` are each read once, in the checkpointer's constructor. A broken or
crafted file fails there, with one ``UserValueError`` line naming the file and the key,
instead of at the end of an epoch or deep inside a tensor reshape.
"""

import os
import re
from typing import Any, Dict, Mapping, Optional

from torchtune._errors import UserValueError
from torchtune.modules._rope_config import hf_rotary_dim
from torchtune.training.checkpointing import _io

# Far above any real size or count (the largest hidden size in use is ~16K, vocabularies
# ~256K), far below what would make a reshape or an allocation absurd.
MAX_SIZE = 1 << 24

# Optional size keys checked when present: a crafted value fails here, not in a builder.
_HF_SIZE_KEYS = ("vocab_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings")
_META_SIZE_KEYS = ("n_layers", "multiple_of")  # Meta writes vocab_size -1: not checked


def _int(
    values: Mapping[str, Any], key: str, where: str, required: bool, maximum: int = MAX_SIZE
) -> Optional[int]:
    """``values[key]`` as an int in ``[1, maximum]``; None if optional and absent or null."""
    if values.get(key) is None:
        if required:
            raise UserValueError(f"{where} lacks {key!r}, needed for the attention head layout")
        return None
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int):  # JSON true is an int in Python
        raise UserValueError(
            f"{where}: {key!r} must be an integer, got {value!r} ({type(value).__name__})"
        )
    if not 1 <= value <= maximum:
        raise UserValueError(f"{where}: {key!r} must be between 1 and {maximum}, got {value}")
    return value


def _heads(
    where: str, num_heads: int, num_kv_heads: int, dim: int, head_dim: Optional[int], names: Dict[str, str]
) -> Dict[str, Optional[int]]:
    """Cross-check the head counts (``names`` maps our names to the file's key names)."""
    if dim % num_heads:
        raise UserValueError(
            f"{where}: {names['dim']} {dim} is not divisible by {names['num_heads']} {num_heads}"
        )
    if num_heads % num_kv_heads:
        raise UserValueError(
            f"{where}: {names['num_heads']} {num_heads} is not a multiple of "
            f"{names['num_kv_heads']} {num_kv_heads}"
        )
    if (head_dim or dim // num_heads) % 2:
        key = "head_dim" if head_dim else f"{names['dim']} / {names['num_heads']}"
        raise UserValueError(
            f"{where}: {key} is {head_dim or dim // num_heads}; rotary embeddings need an even head_dim"
        )
    return {"num_heads": num_heads, "num_kv_heads": num_kv_heads, "dim": dim, "head_dim": head_dim}


def read_hf_config(path: str) -> Dict[str, Any]:
    """Read and check a transformers ``config.json``.

    Args:
        path (str): the file.

    Returns:
        Dict[str, Any]: the parsed config.

    Raises:
        UserValueError: naming the file and the key whose value has the wrong type or range,
            or head counts that do not divide.
    """
    where = f"config.json {path}"
    config = _io.load_json(path, what="config.json")
    if config.get("model_type") is not None and not isinstance(config["model_type"], str):
        raise UserValueError(f"{where}: 'model_type' must be a string, got {config['model_type']!r}")
    for key in _HF_SIZE_KEYS:
        _int(config, key, where, required=False)
    tie = config.get("tie_word_embeddings")
    if tie is not None and not isinstance(tie, bool):
        raise UserValueError(f"{where}: 'tie_word_embeddings' must be true or false, got {tie!r}")
    from torchtune.models._auto import text_decoder_config  # models import checkpointing

    # A multimodal checkpoint's head layout is its text decoder's (text_config).
    heads_from_hf_config(text_decoder_config(config, where), path)
    return config


def heads_from_hf_config(config: Mapping[str, Any], path: str) -> Dict[str, Optional[int]]:
    """num_heads/num_kv_heads/dim/head_dim from a transformers config, checked.

    Args:
        config (Mapping[str, Any]): the parsed ``config.json``.
        path (str): where it came from, for messages.

    Returns:
        Dict[str, Optional[int]]: keyword arguments for the key maps (``head_dim`` may be None;
        ``rotary_dim`` only for a partial-rotary model).

    Raises:
        UserValueError: on a missing, mistyped or out-of-range value, naming file and key.
    """
    where = f"config.json {path}"
    num_heads = _int(config, "num_attention_heads", where, required=True)
    dim = _int(config, "hidden_size", where, required=True)
    num_kv_heads = _int(config, "num_key_value_heads", where, required=False) or num_heads
    head_dim = _int(config, "head_dim", where, required=False, maximum=dim)
    names = {"num_heads": "num_attention_heads", "num_kv_heads": "num_key_value_heads", "dim": "hidden_size"}
    heads = _heads(where, num_heads, num_kv_heads, dim, head_dim, names)
    rotary_dim = hf_rotary_dim(config)  # partial_rotary_factor: the key maps permute only these
    if rotary_dim != (head_dim or dim // num_heads):
        heads["rotary_dim"] = rotary_dim
    return heads


def read_params(path: str) -> Dict[str, Optional[int]]:
    """Head counts from Meta's ``params.json``, checked.

    Args:
        path (str): the file.

    Returns:
        Dict[str, Optional[int]]: ``num_heads``, ``num_kv_heads``, ``dim``, ``head_dim``
        (None unless the file gives it, as Mistral's do).

    Raises:
        UserValueError: on a missing, mistyped or out-of-range value, naming file and key.
    """
    where = f"params.json {path}"
    params = _io.load_json(path, what="params.json")
    for key in _META_SIZE_KEYS:
        _int(params, key, where, required=False)
    num_heads = _int(params, "n_heads", where, required=True)
    dim = _int(params, "dim", where, required=True)
    num_kv_heads = _int(params, "n_kv_heads", where, required=False) or num_heads
    # Mistral's params.json gives head_dim (Nemo's is not dim / n_heads); Meta's has none.
    head_dim = _int(params, "head_dim", where, required=False, maximum=dim)
    names = {"num_heads": "n_heads", "num_kv_heads": "n_kv_heads", "dim": "dim"}
    return _heads(where, num_heads, num_kv_heads, dim, head_dim, names)


def read_index(path: str, required: bool = True) -> Optional[Dict[str, Any]]:
    """Read an HF ``*.index.json`` and check its ``weight_map``.

    Every shard it names must be a relative path without ``..``: an index may only point
    at files inside its own folder (and so inside ``checkpoint_dir``).

    Args:
        path (str): the index file.
        required (bool): if False, a JSON object without ``weight_map`` (another tool's
            index found beside the shards) gives None instead of an error.

    Returns:
        Optional[Dict[str, Any]]: the parsed index (``weight_map``: tensor name -> shard).

    Raises:
        UserValueError: naming the index file and the offending entry.
    """
    index = _io.load_json(path, what="index file")
    if not required and "weight_map" not in index:
        return None
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise UserValueError(
            f"Index file {path} has no 'weight_map' object mapping tensor names to shard files"
        )
    if index.get("metadata") is not None and not isinstance(index["metadata"], dict):
        raise UserValueError(f"Index file {path}: 'metadata' must be an object, got {index['metadata']!r}")
    for key, shard in weight_map.items():
        if not isinstance(shard, str) or not shard.strip():
            raise UserValueError(
                f"Index file {path}: weight_map[{key!r}] must be a shard file name, got {shard!r}"
            )
        if os.path.isabs(shard) or ".." in re.split(r"[\\/]", shard):
            raise UserValueError(
                f"Index file {path}: weight_map[{key!r}] = {shard!r} points outside the "
                "checkpoint folder; shard names must be relative paths without '..'"
            )
    return index


def read_download_record(path: str) -> Dict[str, str]:
    """Read the ``.tune_download.json`` that ``tune download`` leaves: ``repo_id``, ``revision``.

    Raises:
        UserValueError: if it is not a JSON object with string ``repo_id`` and ``revision``.
    """
    record = _io.load_json(path, what="download record")
    for key in ("repo_id", "revision"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise UserValueError(
                f"Download record {path}: {key!r} must be a non-empty string, got "
                f"{record.get(key)!r} (delete the file or run tune download again)"
            )
    return record
