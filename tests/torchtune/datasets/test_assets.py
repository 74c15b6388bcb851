"""The test fixtures are what tests/assets/README.md says they are."""

import hashlib
import json
from pathlib import Path

import pytest

ASSETS = Path(__file__).parents[2] / "assets"
SHARED = Path(__file__).parents[4] / "shared" / "data"


def test_every_asset_is_small_and_described():
    readme = (ASSETS / "README.md").read_text()
    for path in ASSETS.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert path.stat().st_size < 1_000_000, path.name
            assert f"`{path.relative_to(ASSETS)}`" in readme, f"{path.name} not in README.md"


def test_checksums_match_readme():
    readme = (ASSETS / "README.md").read_text()
    for line in readme.splitlines():
        if line.startswith("| `"):
            name, size, sha = (c.strip().strip("`") for c in line.split("|")[1:4])
            data = (ASSETS / name).read_bytes()
            assert len(data) == int(size), name
            assert hashlib.sha256(data).hexdigest() == sha, name


def test_alpaca_1000_is_the_first_1000_records():
    records = json.loads((ASSETS / "alpaca_1000.json").read_text())
    assert len(records) == 1000
    assert all(set(r) == {"instruction", "input", "output"} for r in records)
    source = SHARED / "alpaca" / "alpaca_5000.json"
    if not source.exists():
        pytest.skip(f"{source} is not available (it is outside the repository)")
    assert records == json.loads(source.read_text())[:1000]
