#!/usr/bin/env bash
# Regenerate the lock files images/requirements/<kernel>.txt from pyproject.toml's extras.
# One lock per kernel; every image (Dockerfile and Apptainer definition) installs exactly its lock;
# all.txt (the `all` extra: hub, mri, josephson, test) is what `make venv` installs into .venv.
#   images/requirements/compile.sh            # all five (mri-bet last: it takes all.txt's pins)
#   images/requirements/compile.sh mri        # one
# uv comes with the test extra (.venv/bin/uv); set UV to use another. Needs PyPI.
# --upgrade takes the newest releases the extras allow; without it uv keeps the current pins.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
UV=${UV:-$ROOT/.venv/bin/uv}
KERNELS=("$@")
[ ${#KERNELS[@]} -gt 0 ] || KERNELS=(mri josephson dl all mri-bet)
for kernel in "${KERNELS[@]}"; do
    if [ "$kernel" = mri-bet ]; then
        # brain extraction: exactly the listed packages (no torch: images/mri/install-bet.sh pins it),
        # at the versions all.txt already pins where it has them
        "$UV" pip compile images/requirements/mri-bet.in --no-deps -c images/requirements/all.txt \
            --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes --quiet \
            --custom-compile-command "images/requirements/compile.sh mri-bet" -o images/requirements/mri-bet.txt
        echo "images/requirements/mri-bet.txt: $(grep -c '^[a-z0-9]' images/requirements/mri-bet.txt) packages"
        continue
    fi
    inputs=(pyproject.toml)
    [ -f "images/requirements/$kernel.in" ] && inputs+=("images/requirements/$kernel.in")
    "$UV" pip compile "${inputs[@]}" --extra "$kernel" \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
        --generate-hashes --no-strip-extras --quiet \
        --custom-compile-command "images/requirements/compile.sh $kernel" \
        ${UPGRADE:+--upgrade} \
        -o "images/requirements/$kernel.txt"
    echo "images/requirements/$kernel.txt: $(grep -c '^[a-z0-9]' "images/requirements/$kernel.txt") packages"
done
