"""Tiny Hugging Face model folders, one per implemented architecture: a new architecture is
a row of ``ARCHITECTURES``.

Each folder is what a user downloads: ``save_pretrained`` weights and config.json of a
random transformers model, a byte-level BPE ``tokenizer.json`` trained here with the
``tokenizers`` library (no ``tokenizer.model``), ``tokenizer_config.json`` with a ChatML
chat template, and ``generation_config.json``. The auto-model, auto-tokenizer and hf/*
recipe tests build everything from such a folder alone.
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict

import torch

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_TEXT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request. Give three tips for staying healthy. Eat a balanced diet, "
    "exercise regularly and sleep well. What is the capital of France? Paris is the capital "
    "of France. Translate the sentence into Spanish: the cat sits on the mat. El gato se "
    "sienta en la alfombra. 0123456789 the quick brown fox jumps over the lazy dog.\n"
)


@dataclass(frozen=True)
class Row:
    """One architecture: its transformers classes and the config of its tiny model.

    Attributes:
        name (str): test id.
        config_class (str): transformers config class name.
        model_class (str): transformers model class name.
        config (Dict): sizes and options of the tiny model (vocab_size is the tokenizer's).
    """

    name: str
    config_class: str
    model_class: str
    config: Dict = field(default_factory=dict)


_SIZES = dict(
    hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=6,
    num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
)

ARCHITECTURES = [
    # A Llama-architecture folder that is no named release: rope theta 100,000 without
    # scaling, GQA 3:1, tied output.
    Row("llama", "LlamaConfig", "LlamaForCausalLM",
        dict(_SIZES, rope_theta=100_000.0, tie_word_embeddings=True)),
    # Sized for QLoRA: every decoder linear 128 x 128 (whole NF4 blocks and scaler groups).
    Row("llama-nf4", "LlamaConfig", "LlamaForCausalLM",
        dict(_SIZES, hidden_size=128, intermediate_size=128, num_attention_heads=4,
             num_key_value_heads=4, rope_theta=10_000.0, tie_word_embeddings=True)),
    # Llama 3.2-style: llama3 RoPE scaling, untied.
    Row("llama-rope-scaled", "LlamaConfig", "LlamaForCausalLM",
        dict(_SIZES, rope_theta=500_000.0, tie_word_embeddings=False, rope_scaling={
            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    # Biases on every attention and MLP projection (attention_bias, mlp_bias).
    Row("llama-biased", "LlamaConfig", "LlamaForCausalLM",
        dict(_SIZES, rope_theta=10_000.0, tie_word_embeddings=False, attention_bias=True, mlp_bias=True)),
    # Mistral 7B v0.1-style: a sliding window (16) shorter than the test sequences (40).
    Row("mistral", "MistralConfig", "MistralForCausalLM",
        dict(_SIZES, rope_theta=10_000.0, tie_word_embeddings=False, sliding_window=16)),
    # v0.2 / v0.3-style: the window explicitly null.
    Row("mistral-no-window", "MistralConfig", "MistralForCausalLM",
        dict(_SIZES, rope_theta=1_000_000.0, tie_word_embeddings=False, sliding_window=None)),
    # Nemo / Small 3-style: head_dim (16) is not hidden_size / heads (8).
    Row("mistral-head-dim", "MistralConfig", "MistralForCausalLM",
        dict(_SIZES, head_dim=16, rope_theta=1_000_000.0, tie_word_embeddings=False, sliding_window=None)),
    # Phi-3 mini-style: fused qkv_proj / gate_up_proj in the files, a window (16) shorter than
    # the test sequences.
    Row("phi3", "Phi3Config", "Phi3ForCausalLM",
        dict(_SIZES, rope_theta=10_000.0, tie_word_embeddings=False, sliding_window=16)),
    # Phi-4-mini-style: partial rotary (0.75 of each 8-wide head rotates), tied output, no
    # window (Phi-4-mini's 128k LongRoPE scaling is refused: test_auto_model.py).
    Row("phi4-mini", "Phi3Config", "Phi3ForCausalLM",
        dict(_SIZES, rope_theta=10_000.0, tie_word_embeddings=True, sliding_window=None,
             partial_rotary_factor=0.75)),
    # Gemma: head_dim (16) is not hidden_size / heads (8); sqrt(d) embedding scale, 1 + w
    # norms, GeGLU, tied output.
    Row("gemma", "GemmaConfig", "GemmaForCausalLM",
        dict(_SIZES, head_dim=16, rope_theta=10_000.0, tie_word_embeddings=True)),
    # Gemma 2: sandwich norms, both soft-caps (small enough to bite on random weights), a
    # window (16) on layer 0 shorter than the test sequences, query_pre_attn_scalar.
    Row("gemma2", "Gemma2Config", "Gemma2ForCausalLM",
        dict(_SIZES, head_dim=16, rope_theta=10_000.0, tie_word_embeddings=True, sliding_window=16,
             query_pre_attn_scalar=24, attn_logit_softcapping=2.0, final_logit_softcapping=3.0)),
    # Gemma 3: q/k norms, a sliding layer (window 16, RoPE base 10,000) and a global one
    # (base 1e6, linear scaling 8), as the 4B+ sizes have them.
    Row("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM",
        dict(_SIZES, head_dim=16, tie_word_embeddings=True, sliding_window=16,
             query_pre_attn_scalar=24, layer_types=["sliding_attention", "full_attention"],
             rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                              "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0}})),
    # Qwen 3 MoE: 8 experts of width 16, 2 per token, weights renormalised; layer 1 dense.
    Row("qwen3-moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
        dict(_SIZES, head_dim=16, rope_theta=1_000_000.0, tie_word_embeddings=False,
             moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
             mlp_only_layers=[1])),
    # As the released models are: every layer a mixture (what llama.cpp's converter reads).
    Row("qwen3-moe-sparse", "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
        dict(_SIZES, head_dim=16, rope_theta=1_000_000.0, tie_word_embeddings=False,
             moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True)),
    # Mixtral: 4 experts of width 96, 2 per token (always renormalised), a window (16)
    # shorter than the test sequences.
    Row("mixtral", "MixtralConfig", "MixtralForCausalLM",
        dict(_SIZES, rope_theta=1_000_000.0, tie_word_embeddings=False, sliding_window=16,
             num_local_experts=4, num_experts_per_tok=2)),
    Row("qwen2", "Qwen2Config", "Qwen2ForCausalLM",
        dict(_SIZES, rope_theta=1_000_000.0, tie_word_embeddings=True)),
    Row("qwen3", "Qwen3Config", "Qwen3ForCausalLM",
        dict(_SIZES, head_dim=16, rope_theta=1_000_000.0, tie_word_embeddings=False)),
]
ROWS = {row.name: row for row in ARCHITECTURES}


def train_tokenizer(vocab_size: int = 320):
    """A byte-level BPE ``tokenizers.Tokenizer`` with the ChatML special tokens."""
    from tokenizers import decoders, models, pre_tokenizers, trainers, Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([_TEXT] * 4, trainer)
    return tok


# Llama 2's chat format, in text only: tok512 has no special tokens for turns.
INST_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% else %}{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
    "{% endfor %}"
)
TOK512 = Path(__file__).parent / "assets" / "tok512.model"


def _write_bpe_tokenizer(folder: Path) -> Dict:
    tok = train_tokenizer()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": CHATML, "model_max_length": 256,
    }))
    return dict(vocab_size=tok.get_vocab_size(), bos_token_id=None,
                eos_token_id=tok.token_to_id("<|im_end|>"),
                pad_token_id=tok.token_to_id("<|endoftext|>"))


def _write_sentencepiece_tokenizer(folder: Path) -> Dict:
    shutil.copy(TOK512, folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "chat_template": INST_TEMPLATE,
        "model_max_length": 256,
    }))
    return dict(vocab_size=512, bos_token_id=1, eos_token_id=2, pad_token_id=None)


def write_folder(row: Row, folder: Path, seed: int = 0, dtype: torch.dtype = torch.float32,
                 tokenizer: str = "bpe"):
    """Write the tiny model of ``row`` to ``folder`` as a Hub download has it.

    Args:
        tokenizer (str): "bpe" (a ``tokenizer.json`` trained here, ChatML template) or
            "sentencepiece" (``tokenizer.model``: tests/assets/tok512.model, a Llama 2-style
            template), the kind llama.cpp's converter reads without a known-model list.

    Returns:
        The transformers model (fp32, eval mode).
    """
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    writers = {"bpe": _write_bpe_tokenizer, "sentencepiece": _write_sentencepiece_tokenizer}
    ids = writers[tokenizer](folder)
    config = getattr(transformers, row.config_class)(**ids, **row.config)
    torch.manual_seed(seed)
    model = getattr(transformers, row.model_class)(config).to(dtype)
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=ids["eos_token_id"], bos_token_id=ids["bos_token_id"])
    model.save_pretrained(folder, safe_serialization=True)
    return model.float().eval()


def folder_factory(tmp_path_factory) -> Callable[[str], Path]:
    """``make(name)``: the folder of ``ROWS[name]``, written once per session."""
    made: Dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in made:
            folder = tmp_path_factory.mktemp(f"hf-{name}") / name
            write_folder(ROWS[name], folder)
            made[name] = folder
        return made[name]

    return make
