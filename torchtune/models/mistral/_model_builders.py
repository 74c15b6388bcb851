"""Model builders: Mistral 7B (v0.1, mistralai/Mistral-7B-v0.1 config.json) and its reward
model, with the LoRA and QLoRA builders derived from them (``models/_builders.py``)."""

from torchtune.models._builders import decoder_builder, lora_sized
from torchtune.models._description import DecoderDescription
from torchtune.models._qlora import qlora_builder
from torchtune.models.mistral._component_builders import mistral, mistral_classifier

_7B = dict(
    vocab_size=32_000, num_layers=32, num_heads=32, num_kv_heads=8, embed_dim=4096,
    intermediate_dim=14336, max_seq_len=32768, attn_dropout=0.0, norm_eps=1e-5,
    rope_base=10_000, sliding_window=4096,
)


@decoder_builder
def mistral_7b() -> DecoderDescription:
    """Mistral 7B v0.1: 32 layers, 32 heads with 8 kv heads, d=4096, hidden 14336, a
    4096-token sliding window; 7,241,732,096 parameters. For v0.2 / v0.3 (no window; v0.3's
    vocabulary is 32768) build from the folder (``torchtune.models.auto_model``)."""
    return mistral.describe(**_7B)


@decoder_builder
def mistral_reward_7b() -> DecoderDescription:
    """Mistral 7B with a one-output head: a reward model (0.6.1's ``mistral_reward_7b``)."""
    return mistral_classifier.describe(num_classes=1, **_7B)


lora_mistral_7b = lora_sized(mistral_7b, lora_dropout=0.0)
lora_mistral_reward_7b = lora_sized(mistral_reward_7b, lora_dropout=0.0)
qlora_mistral_7b = qlora_builder(lora_mistral_7b)
qlora_mistral_reward_7b = qlora_builder(lora_mistral_reward_7b)
