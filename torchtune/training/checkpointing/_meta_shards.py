"""Meta's model-parallel checkpoints: ``consolidated.00.pth`` ... ``consolidated.{N-1}.pth``.

Meta's reference code (fairscale model parallelism) gives each of N ranks an even slice of
every weight, and each rank saves its slice under the full name:

=====================================================  ==========================================
``attention.wq/wk/wv``, ``feed_forward.w1/w3``,         ColumnParallelLinear: output rows, dim 0
``output``
``attention.wo``, ``feed_forward.w2``                  RowParallelLinear: input columns, dim 1
``tok_embeddings``                                     ParallelEmbedding: embedding dim, dim 1
``norm``, ``attention_norm``, ``ffn_norm``,             replicated: the same tensor in every file
``rope.freqs``
=====================================================  ==========================================

``merge`` joins the slices (checking that the files are one checkpoint); ``split`` cuts a
full state dict back into N files the same way, so a save mirrors its input.
"""

import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from torchtune._errors import UserValueError

_COLUMN = re.compile(r"(^|\.)(attention\.w[qkv]|feed_forward\.w[13])\.weight$|^output\.weight$")
_ROW = re.compile(r"(^|\.)(attention\.wo|feed_forward\.w2)\.weight$|^tok_embeddings\.weight$")
_REPLICATED = re.compile(r"(^|\.)(norm|attention_norm|ffn_norm)\.weight$|^rope\.freqs$")
_NUMBERED = re.compile(r"consolidated\.(\d+)\.pth")


def split_dim(key: str) -> Optional[int]:
    """The dimension Meta's model parallelism splits ``key`` along; None if replicated.

    Raises:
        UserValueError: for a name that is not a Llama parameter in Meta's layout.
    """
    if _COLUMN.search(key):
        return 0
    if _ROW.search(key):
        return 1
    if _REPLICATED.search(key):
        return None
    raise UserValueError(
        f"Unexpected tensor {key!r} in a model-parallel Meta checkpoint: not a Llama "
        "parameter name in Meta's layout, so how it is split is unknown"
    )


def order_files(paths: Sequence[str]) -> List[str]:
    """The shard files in rank order.

    Files named ``consolidated.NN.pth`` are put in the order of NN, which must run 0..N-1
    (a missing rank would give tensors of the wrong size); other names keep the listed order.

    Raises:
        UserValueError: on a missing or repeated rank.
    """
    numbers = [_NUMBERED.fullmatch(os.path.basename(p)) for p in paths]
    if not all(numbers):
        return list(paths)
    ranks = [int(m.group(1)) for m in numbers]
    if sorted(ranks) != list(range(len(paths))):
        raise UserValueError(
            f"checkpoint_files lists Meta model-parallel shards of ranks {sorted(ranks)}; a "
            f"checkpoint in {len(paths)} files needs ranks 0..{len(paths) - 1}, each once: "
            "list every consolidated.NN.pth file of the checkpoint"
        )
    return [p for _, p in sorted(zip(ranks, paths))]


def check_same_names(shards: Sequence[Tuple[str, Iterable[str]]]) -> None:
    """Every rank file holds the same tensor names (a file per rank, in rank order).

    Raises:
        UserValueError: naming both files and a name only one of them holds.
    """
    first_path, first = shards[0][0], set(shards[0][1])
    for path, names in shards[1:]:
        names = set(names)
        if names != first:
            extra = sorted(names - first) or sorted(first - names)
            raise UserValueError(
                f"Meta shards {first_path} and {path} hold different tensors ({extra[0]!r} is "
                "in one only): they are not ranks of one checkpoint"
            )


def merge(shards: Sequence[Tuple[str, Dict[str, torch.Tensor]]]) -> Dict[str, torch.Tensor]:
    """Join the rank slices of each tensor into the full state dict (Meta names).

    Args:
        shards (Sequence[Tuple[str, Dict[str, torch.Tensor]]]): (file, state dict) in rank
            order.

    Returns:
        Dict[str, torch.Tensor]: the full tensors, replicated ones taken from rank 0.

    Raises:
        UserValueError: naming both files, when the shards hold different tensor names,
            slices of different shapes or dtypes, or replicated tensors that differ: they are
            not the ranks of one checkpoint.
    """
    first_path, first = shards[0]
    if len(shards) == 1:
        return dict(first)
    check_same_names(shards)
    out: Dict[str, torch.Tensor] = {}
    for key, value in first.items():
        dim = split_dim(key)
        for path, sd in shards[1:]:
            other = sd[key]
            if other.shape != value.shape or other.dtype != value.dtype:
                raise UserValueError(
                    f"Meta shards {first_path} and {path} disagree on {key!r}: "
                    f"{tuple(value.shape)} {value.dtype} vs {tuple(other.shape)} {other.dtype}: "
                    "they are not ranks of one checkpoint"
                )
            if dim is None and not torch.equal(other, value):
                raise UserValueError(
                    f"Meta shards {first_path} and {path} hold different values of the "
                    f"replicated tensor {key!r}: they are not ranks of one checkpoint"
                )
        if dim is None:
            out[key] = value
        else:
            if value.dim() <= dim:
                raise UserValueError(f"{first_path}: {key!r} has shape {tuple(value.shape)}, not a matrix")
            out[key] = torch.cat([sd[key] for _, sd in shards], dim=dim)
    return out


def split(state_dict: Dict[str, torch.Tensor], n: int) -> List[Dict[str, torch.Tensor]]:
    """Cut a full Meta-layout state dict into ``n`` rank state dicts (inverse of ``merge``).

    Each slice is a contiguous copy: ``torch.save`` of a view would write the whole tensor.

    Raises:
        ValueError: a split dimension that ``n`` does not divide.
    """
    if n == 1:
        return [state_dict]
    out: List[Dict[str, torch.Tensor]] = [{} for _ in range(n)]
    for key, value in state_dict.items():
        dim = split_dim(key)
        if dim is None:
            for rank in range(n):
                out[rank][key] = value
            continue
        if value.shape[dim] % n:
            raise ValueError(f"Cannot split {key!r} {tuple(value.shape)} into {n} even parts along dim {dim}")
        for rank, part in enumerate(value.tensor_split(n, dim=dim)):
            out[rank][key] = part.contiguous().clone()
    return out
