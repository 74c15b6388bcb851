"""QLoRA under FSDP2: which world sizes can shard the NF4 weights (the sharded load and the
dequantizing gather run end to end in tests/recipes/test_qlora_dora_recipes.py)."""

import pytest
import torch

pytest.importorskip("torchao")

from torchtune import UserValueError, training  # noqa: E402
from torchtune.models.llama2 import lora_llama2  # noqa: E402


def _meta_qlora(embed_dim=256, intermediate_dim=256):
    with torch.device("meta"):
        return lora_llama2(
            ["q_proj", "v_proj"], vocab_size=64, num_layers=1, num_heads=4, num_kv_heads=4,
            embed_dim=embed_dim, intermediate_dim=intermediate_dim, max_seq_len=32,
            lora_rank=2, lora_alpha=4, quantize_base=True,
        )


def test_nf4_weights_shard_only_into_whole_blocks():
    model = _meta_qlora()  # every NF4 weight is 256 x 256 = 4 x 16384 values
    for world_size in (1, 2, 4):
        training.check_nf4_shardable(model, world_size)
    first = r"^QLoRA on 8 processes: the NF4 weight 'layers\.0\.attn\.q_proj\.weight' \[256, 256\].*16384"
    with pytest.raises(UserValueError, match=first) as err:
        training.check_nf4_shardable(model, 8)
    assert "\n" not in str(err.value)
    with pytest.raises(UserValueError, match="on 3 processes"):
        training.check_nf4_shardable(model, 3)  # 256 rows do not split in 3
