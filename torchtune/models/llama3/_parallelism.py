"""The tensor-parallel plan of the Llama decoder, under torchtune 0.6.1's name.

0.6.1's 70B full configs carry ``tensor_parallel_plan: {_component_:
torchtune.models.llama3.base_llama_tp_plan}`` beside ``tensor_parallel_dim: 1``. The plan
maps module names of this library's decoder (the same names 0.6.1 used) to
``torch.distributed.tensor.parallel`` styles: q/k/v and the MLP's w1/w3 split by output
columns, output_proj and w2 by input rows, norms sequence-parallel. The distributed recipe
shards with FSDP2 only and refuses ``tensor_parallel_dim`` > 1, so today the plan is read by
``tune validate`` and by users' own scripts, not applied by a recipe.
"""

from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
)


def base_llama_tp_plan() -> dict[str, ParallelStyle]:
    """Module name pattern -> parallel style, for ``parallelize_module``.

    Returns:
        dict[str, ParallelStyle]: the plan (``layers.*`` patterns cover every layer).
    """
    return {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1)),
        "norm": SequenceParallel(),
        "output": ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate()),
        "layers.*.sa_norm": SequenceParallel(),
        "layers.*.attn": PrepareModuleInput(
            input_layouts=(Shard(1), None), desired_input_layouts=(Replicate(), None)
        ),
        "layers.*.attn.q_proj": ColwiseParallel(),
        "layers.*.attn.k_proj": ColwiseParallel(),
        "layers.*.attn.v_proj": ColwiseParallel(),
        "layers.*.attn.output_proj": RowwiseParallel(output_layouts=Shard(1)),
        "layers.*.mlp_norm": SequenceParallel(),
        "layers.*.mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "layers.*.mlp.w1": ColwiseParallel(),
        "layers.*.mlp.w2": RowwiseParallel(output_layouts=Shard(1)),
        "layers.*.mlp.w3": ColwiseParallel(),
    }
