"""A small SentencePiece model laid out as Gemma's ``tokenizer.model``, trained here (the
real one is 4 MB and under Gemma's terms): BPE with byte fallback, no dummy prefix, no
whitespace normalisation, digits split, ``<pad>`` ``<eos>`` ``<bos>`` ``<unk>`` at 0-3 and
the chat tokens at their real ids (Gemma 1/2: ``<start_of_turn>`` 106, ``<end_of_turn>``
107; Gemma 3: 105, 106, then newline runs, and the image tokens), with the trainer settings
transformers' ``GemmaConverter`` quotes."""

import io
import json
from pathlib import Path

import sentencepiece

ASSETS = Path(__file__).parent / "assets"


def gemma_layout_model(gemma3: bool) -> bytes:
    """A small tokenizer.model with Gemma's (or Gemma 3's) settings and first ids."""
    head = ["<mask>", "[multimodal]"] if gemma3 else ["<mask>", "<2mass>", "[@BOS@]"]
    symbols = head + [f"<unused{i}>" for i in range(99)] + ["<start_of_turn>", "<end_of_turn>"]
    symbols += ["\n" * k for k in range(1, 32)]
    if gemma3:  # at 255999 and 256000 in the real file
        symbols += ["<start_of_image>", "<end_of_image>"]
    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(r["instruction"] + "\n" + r["input"] + "\n" + r["output"]
                               for r in json.loads((ASSETS / "alpaca_1000.json").read_text())),
        model_writer=out, model_type="bpe", vocab_size=2000, character_coverage=1.0,
        byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, allow_whitespace_only_pieces=True,
        split_by_whitespace=True, split_by_number=True, split_by_unicode_script=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", user_defined_symbols=symbols,
        max_sentence_length=100_000, num_threads=1, minloglevel=2,
    )
    return out.getvalue()
