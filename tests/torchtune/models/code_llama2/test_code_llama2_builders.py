"""Code Llama builders: Llama 2's architecture at Code Llama's published sizes."""

import pytest
import torch

from torchtune.models import code_llama2
from torchtune.models.llama2 import llama2_7b, llama2_13b, llama2_70b
from torchtune.modules.peft import LoRALinear


@pytest.mark.parametrize("size,llama", [("7b", llama2_7b), ("13b", llama2_13b), ("70b", llama2_70b)])
def test_sizes_are_llama2_with_16_more_tokens(size, llama):
    """Code Llama adds 16 infilling tokens to Llama 2's vocabulary (embedding and output)."""
    with torch.device("meta"):
        code = getattr(code_llama2, f"code_llama2_{size}")()
        base = llama()
    dim = base.tok_embeddings.weight.shape[1]
    count = sum(p.numel() for p in code.parameters())
    print(f"code_llama2_{size}: {count:,} parameters")
    assert count == sum(p.numel() for p in base.parameters()) + 2 * 16 * dim
    assert code.max_seq_len == 16384


def test_lora_and_qlora_builders():
    with torch.device("meta"):
        lora = code_llama2.lora_code_llama2_7b(["q_proj", "v_proj"], lora_rank=4, lora_alpha=8)
    assert isinstance(lora.layers[0].attn.q_proj, LoRALinear)
    assert code_llama2.qlora_code_llama2_7b.keywords == {"quantize_base": True}
    assert sorted(code_llama2.__all__) == sorted(
        f"{kind}code_llama2_{s}" for kind in ("", "lora_", "qlora_") for s in ("7b", "13b", "70b")
    )
