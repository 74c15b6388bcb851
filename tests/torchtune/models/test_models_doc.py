"""docs/models.md is what scripts/models_doc.py writes from the builders, never hand-edited."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts"))

import models_doc  # noqa: E402


def test_models_doc_is_generated_from_the_code():
    """A builder, size, default or argument doc that changes must be regenerated into
    docs/models.md (run `python scripts/models_doc.py`)."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "models_doc.py"), "--check"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_args_parser_reads_grouped_and_wrapped_entries():
    doc = """Build it.

    Args:
        a, b (int): the first
            two.
        c, d, e,
        f: as in ``x``.
        g (Optional[Tuple[int, int]]): a type with brackets: and a colon.

    Returns:
        int: nothing.
    """
    args = models_doc.parse_args_section(doc)
    assert args == {
        "a": ("int", "the first two."),
        "b": ("int", "the first two."),
        "c": (None, "as in ``x``."),
        "d": (None, "as in ``x``."),
        "e": (None, "as in ``x``."),
        "f": (None, "as in ``x``."),
        "g": ("Optional[Tuple[int, int]]", "a type with brackets: and a colon."),
    }


def test_as_in_is_followed_to_the_builder_it_names():
    from torchtune.models.llama2 import llama2, lora_llama2
    from torchtune.models.llama3_2 import lora_llama3_2

    # lora_llama3_2 -> llama3_2 -> torchtune.models.llama3.llama3
    assert models_doc.meaning_of(lora_llama3_2, "num_layers") == "number of decoder layers."
    # lora_llama3_2 -> torchtune.models.llama2.lora_llama2
    assert models_doc.meaning_of(lora_llama3_2, "lora_alpha") == models_doc.meaning_of(
        lora_llama2, "lora_alpha"
    )
    assert models_doc.meaning_of(llama2, "no_such_argument") is None
