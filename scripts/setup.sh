#!/usr/bin/env bash
# Create .venv and install torchtune with its test extras. Safe to re-run.
#
# torch is pinned to the CPU build this machine keeps on local disk, so a fresh
# install takes seconds; the package metadata itself accepts any torch >= 2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
