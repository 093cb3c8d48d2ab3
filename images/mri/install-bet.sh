#!/usr/bin/env bash
# Add brain extraction (deepbet on a CPU build of torch) to a venv that holds the MRI lock:
#   images/mri/install-bet.sh [VENV]        (default /opt/venv)
# images/requirements/mri-bet.txt (hashed) first, then torch itself, pinned in images/torch.txt (its
# `cpu:` line) and never resolved freely (a free resolve takes a CUDA build of several GB).
# TORCH_INDEX_URL picks where the CPU build comes from: the images set PyTorch's CPU index; unset, pip's own configuration decides
# (on the development machines a CPU wheel lies in pip's find-links folder).
set -euo pipefail
VENV=${1:-/opt/venv}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TORCH_VERSION=$(sed -n 's/^# cpu: torch==\([^ ]*\).*/\1/p' "$ROOT/images/torch.txt")
[ -n "$TORCH_VERSION" ] || { echo "install-bet: no '# cpu: torch==' line in $ROOT/images/torch.txt" >&2; exit 1; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
"${PIP[@]}" install --no-deps --require-hashes -r "$ROOT/images/requirements/mri-bet.txt"
"${PIP[@]}" install --no-deps ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip --disable-pip-version-check check
"$VENV/bin/python" -c "import torch, deepbet; assert not torch.version.cuda, 'a CUDA build of torch'"
echo "install-bet: deepbet + torch $TORCH_VERSION (CPU) -> $VENV"
