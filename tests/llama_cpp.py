"""llama.cpp's ``convert_hf_to_gguf.py``, the converter users run on a fine-tuned folder.

It is not on PyPI as a package of its own; the ``llama-cpp-python`` source distribution
vendors llama.cpp whole. The first use downloads that sdist with pip (a pinned version,
so the converter does not change under the tests) and keeps the converter, its
``conversion`` package and its ``gguf-py`` in a cache.
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

VERSION = "0.3.36"
CACHE = Path(os.environ.get("TORCHTUNE_LLAMA_CPP_CACHE",
                            Path.home() / ".cache" / "torchtune-tests" / f"llama-cpp-{VERSION}"))
_KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def converter(cache: Path = CACHE) -> Path:
    """The path of ``convert_hf_to_gguf.py``, fetched on first use.

    Raises:
        RuntimeError: with pip's last words, when the package index cannot be reached.
    """
    script = cache / "convert_hf_to_gguf.py"
    if script.is_file():
        return script
    cache.mkdir(parents=True, exist_ok=True)
    download = cache / "sdist"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={VERSION}", "--no-deps",
         "--no-binary=:all:", "--disable-pip-version-check", "-q",
         "-d", str(download)],
        capture_output=True, text=True, timeout=600,
    )
    sdists = sorted(download.glob("llama_cpp_python-*.tar.gz"))
    if not sdists:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pip download llama-cpp-python=={VERSION} failed: {last}")
    prefix = f"{sdists[0].name[:-len('.tar.gz')]}/vendor/llama.cpp/"
    staging = cache / "staging"
    with tarfile.open(sdists[0]) as tar:
        members = []
        for m in tar.getmembers():
            rel = m.name[len(prefix):] if m.name.startswith(prefix) else None
            if rel and rel.startswith(_KEEP) and (m.isfile() or m.isdir()):
                m.name = rel
                members.append(m)
        tar.extractall(staging, members=members, filter="data")
    for name in ("conversion", "gguf-py", "convert_hf_to_gguf.py"):  # the script last: it marks done
        os.replace(staging / name, cache / name)
    for f in download.iterdir():
        f.unlink()
    return script


def convert(folder: Path, outfile: Path) -> subprocess.CompletedProcess:
    """Run the converter on a model folder, writing float32 GGUF (no rounding to compare)."""
    return subprocess.run(
        [sys.executable, str(converter()), str(folder), "--outtype", "f32", "--outfile", str(outfile)],
        capture_output=True, text=True, timeout=600,
    )
