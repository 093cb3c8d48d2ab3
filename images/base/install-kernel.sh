#!/usr/bin/env bash
# Install one kernel's lock file into a venv, then hpclab itself, and prove the result:
#   images/base/install-kernel.sh LOCK "IMPORTS" [VENV]
#     LOCK     images/requirements/<kernel>.txt (pinned, hashed: uv pip compile --generate-hashes)
#     IMPORTS  Python statement that must run afterwards, e.g. "import nibabel, dcm2niix"
#     VENV     default /opt/venv (created when missing)
#   UV=/path/to/uv   install with `uv pip` instead of the venv's pip (same flags, same result)
# Used by every image (images/<kernel>/Dockerfile and <kernel>.def) and by tests/platform/test_images.py,
# so an image and the test install a lock the same way: exactly its pins (--no-deps
# --require-hashes; `pip check` fails on anything the lock lacks), nothing resolved at build time.
set -euo pipefail
LOCK=$1
IMPORTS=$2
VENV=${3:-/opt/venv}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
if [ -n "${UV:-}" ]; then   # the tests: uv installs the same pins from its cache in seconds
    PIP=("$UV" pip --quiet); TARGET=(--python "$VENV/bin/python")
else                        # the images: the venv's own pip
    PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input --quiet); TARGET=()
fi
"${PIP[@]}" install "${TARGET[@]}" --no-deps --require-hashes -r "$LOCK"
# hpclab itself (its only dependency, psutil, is in every lock)
"${PIP[@]}" install "${TARGET[@]}" --no-deps "$ROOT"
# `pip install --user` in the kernel: its own user site (PYTHONUSERBASE from the kernel launcher), no base site-packages
"$VENV/bin/python" -m hpclab.curated_venv "$VENV"
"${PIP[@]}" check "${TARGET[@]}"
"$VENV/bin/python" -c "import hpclab, hpclab.kernel_launcher, ipykernel; $IMPORTS"
echo "install-kernel: $LOCK -> $VENV: imports OK"
