"""Llama 3's default SwiGLU hidden size (torchtune 0.6.1 ``llama3/_model_utils.py``)."""


def scale_hidden_dim_for_mlp(dim: int, multiple_of: int = 256) -> int:
    """``4 * int(2 * dim / 3)`` rounded up to ``multiple_of``.

    The component builders use it only when ``intermediate_dim`` is None; every published
    Llama 3.x size sets its hidden size explicitly (Meta's ``ffn_dim_multiplier`` and
    ``multiple_of=1024`` give 14336 for d=4096, which this rule does not), so the model
    builders pass it. Kept as torchtune 0.6.1 has it, so a config written for 0.6.1 without
    ``intermediate_dim`` builds the same model.
    """
    hidden = 4 * int(2 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
