"""Low-precision weights: NF4 (QLoRA) through torchao, imported only when first used."""

from torchtune.modules.low_precision._nf4 import (
    NF4_BLOCK,
    TorchaoMissingError,
    check_nf4_size,
    dequantize,
    is_nf4,
    linear_nf4,
    nf4_api,
    nf4_parts,
    quantize_incoming_weight,
    to_nf4,
)
from torchtune.modules.low_precision.nf4_linear import FrozenNF4Linear

__all__ = [
    "FrozenNF4Linear",
    "NF4_BLOCK",
    "check_nf4_size",
    "TorchaoMissingError",
    "dequantize",
    "is_nf4",
    "linear_nf4",
    "nf4_api",
    "nf4_parts",
    "quantize_incoming_weight",
    "to_nf4",
]
