"""Model builders: Llama 3.3 70B, which has Llama 3.1 70B's architecture and sizes (only
the weights differ). The LoRA and QLoRA builders are derived from the base one
(``models/_builders.py``)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.llama3_1 import llama3_1_70b


@decoder_builder
def llama3_3_70b() -> DecoderDescription:
    """Llama 3.3 70B: Llama 3.1 70B's decoder (80 layers, 64 heads / 8 kv heads, d=8192,
    hidden 28672, RoPE scale factor 8); 70,553,706,496 parameters."""
    return llama3_1_70b.describe()


lora_llama3_3_70b = lora_sized(llama3_3_70b)

# QLoRA: the LoRA builders with NF4 base weights, named as in torchtune 0.6.1.
qlora_llama3_3_70b = qlora_builder(lora_llama3_3_70b)
