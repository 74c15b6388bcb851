"""Every shipped config starts with the comment the README promises: what it runs, the exact
`tune run` line and, for the recipes that load a real model, the memory it needs.

The stories260K configs are tiny CPU configs with their own run-time notes, and evaluation
configs do not train; they are exempt from the memory line.
"""

from pathlib import Path

import pytest

from torchtune._recipe_registry import get_all_recipes

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "recipes" / "configs"

# Recipes whose configs need no memory line: evaluation runs the model like generation
# but is not asked to state it (issue 24).
NO_MEMORY_LINE = {"eleuther_eval"}

SHIPPED = sorted((r.name, c.name) for r in get_all_recipes() for c in r.configs)


def header(config: str) -> list:
    """The config's leading comment lines."""
    lines = []
    for line in (CONFIGS / f"{config}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


@pytest.mark.parametrize(
    "recipe, config",
    [(r, c) for r, c in SHIPPED if not c.startswith("stories260K/") and r not in NO_MEMORY_LINE],
)
def test_header_states_the_memory_needed(recipe, config):
    lines = header(config)
    memory = [i for i, line in enumerate(lines) if line.startswith("# Memory:")]
    assert memory, f"{config}.yaml: no header line starting '# Memory:'"
    # The paragraph that line opens gives figures, in GB.
    paragraph = []
    for line in lines[memory[0]:]:
        if line.strip() == "#":
            break
        paragraph.append(line)
    assert " GB" in " ".join(paragraph), f"{config}.yaml: the memory paragraph gives no GB figure"


@pytest.mark.parametrize("recipe, config", SHIPPED)
def test_header_has_the_exact_tune_run_line(recipe, config):
    text = "\n".join(header(config))
    assert f"{recipe}" in text and f"--config {config}" in text, (
        f"{config}.yaml: the header should show `tune run {recipe} --config {config}`"
    )
