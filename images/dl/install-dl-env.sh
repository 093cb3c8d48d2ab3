#!/usr/bin/env bash
# Build the deep-learning environment `.venv-dl` (issue 6) and nothing else:
#   images/requirements/dl.txt          (the lock, hash-checked: torch + torchvision at the pins of
#                                        images/torch.txt, never resolved freely, their CUDA wheels,
#                                        the `dl` extra and Horovod's build and runtime deps)
#   hpclab                              (editable, --no-deps: its deps come from the lock)
#   horovod 0.28.1                      (built from its sdist with the patch below, once per
#                                        torch version; the wheel is kept in a cache folder
#                                        outside the repo and reused)
# Idempotent: when the stamp matches (same script, `dl` extra, lock and options) it exits at once.
#
# Environment:
#   HPCLAB_DL_VENV       venv path             (default: <repo>/.venv-dl)
#   HPCLAB_WHEEL_CACHE   Horovod wheel cache   (default: $HOME/.cache/hpclab/wheels)
#   HPCLAB_DL_HOROVOD    1 (default) build/install Horovod; 0 skips it (DDP backend only)
#   HOROVOD_GPU_OPERATIONS=NCCL (with a full CUDA toolkit on PATH) builds a GPU Horovod
#                        instead of the CPU/gloo one; its wheel is cached under its own key.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=${HPCLAB_DL_VENV:-$ROOT/.venv-dl}
CACHE=${HPCLAB_WHEEL_CACHE:-$HOME/.cache/hpclab/wheels}
WITH_HOROVOD=${HPCLAB_DL_HOROVOD:-1}

# torch and torchvision: images/torch.txt, the project's one torch pin (its requirement lines)
TORCH_VERSION=$(sed -n 's/^torch==\([^ ]*\).*/\1/p' "$ROOT/images/torch.txt")
TORCHVISION_VERSION=$(sed -n 's/^torchvision==\([^ ]*\).*/\1/p' "$ROOT/images/torch.txt")
[ -n "$TORCH_VERSION" ] && [ -n "$TORCHVISION_VERSION" ] \
    || { echo "install-dl-env: no torch== or torchvision== line in $ROOT/images/torch.txt" >&2; exit 1; }
HOROVOD_VERSION=0.28.1
LOCK=$ROOT/images/requirements/dl.txt
PY=$VENV/bin/python
T0=$SECONDS

log() { printf '[dl-env %4ds] %s\n' "$((SECONDS - T0))" "$*"; }

if [ -n "${HOROVOD_GPU_OPERATIONS:-}" ]; then VARIANT=gpu; else VARIANT=cpu; fi
PYTAG=$(python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
WHEEL_DIR=$CACHE/horovod-$HOROVOD_VERSION+torch$TORCH_VERSION-$VARIANT-$PYTAG-$(uname -m)

# --- fast path -------------------------------------------------------------------------------
# Key: this script + the `dl = [...]` extras of pyproject.toml (not the whole file, which other
# extras change) + the torch pins + the lock + the options.
STAMP_KEY=$({ cat "${BASH_SOURCE[0]}"; sed -n '/^dl = \[/,/\]/p' "$ROOT/pyproject.toml"; grep -v '^#' "$ROOT/images/torch.txt"; cat "$LOCK"; } \
            | sha256sum | cut -c1-16)-$WITH_HOROVOD-$VARIANT
if [ -x "$PY" ] && [ -f "$VENV/.dl-installed" ] && [ "$(cat "$VENV/.dl-installed")" = "$STAMP_KEY" ] \
   && "$PY" - "$TORCH_VERSION" "$TORCHVISION_VERSION" "$HOROVOD_VERSION" "$WITH_HOROVOD" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
torch_v, tv_v, hvd_v, with_hvd = sys.argv[1:]
try:
    ok = version("torch") == torch_v and version("torchvision") == tv_v
    ok = ok and (with_hvd != "1" or version("horovod") == hvd_v)
    version("hpclab")
except PackageNotFoundError:
    ok = False
sys.exit(0 if ok else 1)
PYEOF
then
    "$PY" -m hpclab.curated_venv "$VENV" >/dev/null   # pip install --user per kernel (idempotent, cheap)
    log "up to date: $VENV (torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION$([ "$WITH_HOROVOD" = 1 ] && echo ", horovod $HOROVOD_VERSION"))"
    exit 0
fi

# Every pip call in this venv carries these pins, so no dependency can pull another torch (and a lock
# that pinned another one fails at once instead of replacing it).
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
printf 'torch==%s\ntorchvision==%s\n' "$TORCH_VERSION" "$TORCHVISION_VERSION" >"$CONSTRAINTS"
# (pip's stderr without the notes this machine's extra local indexes print for every package)
pip_() { "$PY" -m pip --disable-pip-version-check "$@" -c "$CONSTRAINTS" \
             2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

# --- venv, then the lock: torch, torchvision and everything else, at its pins and hashes -------
if [ ! -x "$PY" ]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi
rm -f "$VENV/.dl-installed"
log "images/requirements/dl.txt (torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION, hash-checked)"
pip_ install --quiet --require-hashes -r "$LOCK"

# --- hpclab itself (editable; the dl extra's deps came from the lock) ---------------------------
log "hpclab (editable, --no-deps)"
pip_ install --quiet --no-deps -e "$ROOT"
# `pip install --user` in the dl kernel: its own user site (~/.local/hpclab/dl), no base site-packages
"$PY" -m hpclab.curated_venv "$VENV"

# --- Horovod ------------------------------------------------------------------------------------
if [ "$WITH_HOROVOD" = 1 ]; then
    WHEEL=$(ls "$WHEEL_DIR"/horovod-"$HOROVOD_VERSION"-*.whl 2>/dev/null | head -n1 || true)
    if [ -z "$WHEEL" ]; then
        log "no cached Horovod wheel in $WHEEL_DIR: building horovod $HOROVOD_VERSION from its sdist"
        # Debian's cmake (3.25): pip's cmake 4.x rejects gloo's old cmake_minimum_required.
        if ! command -v /usr/bin/cmake >/dev/null; then
            if [ "$(id -u)" = 0 ]; then
                # in a checkout, apt-get that waits while another apt or dpkg runs (an image build has plain apt-get)
                apt=apt-get; [ -x "$ROOT/deploy/apt-get-wait" ] && apt="$ROOT/deploy/apt-get-wait"
                "$apt" update -qq && DEBIAN_FRONTEND=noninteractive "$apt" install -y -qq cmake
            else
                echo "install Debian's cmake first: sudo apt-get install -y cmake" >&2; exit 1
            fi
        fi
        pip_ install --quiet setuptools wheel cloudpickle psutil pyyaml packaging
        BUILD=$(mktemp -d)
        pip_ download --quiet --no-deps --no-binary :all: -d "$BUILD" "horovod==$HOROVOD_VERSION"
        tar -xzf "$BUILD"/horovod-"$HOROVOD_VERSION".tar.gz -C "$BUILD"
        SRC=$BUILD/horovod-$HOROVOD_VERSION

        # ---- THE PATCH -------------------------------------------------------------------------
        # (1) Horovod 0.28.1 pins C++14; torch 2.14 headers need C++20 (horovod/torch). The
        #     top-level CMakeLists gets 20 too for the CPU build, 17 for a CUDA build (its .cu
        #     kernels), as measured.
        TOP_STD=$([ "$VARIANT" = gpu ] && echo 17 || echo 20)
        sed -i "s/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD $TOP_STD)/" "$SRC/CMakeLists.txt"
        sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 20)/' "$SRC/horovod/torch/CMakeLists.txt"
        grep -q "set(CMAKE_CXX_STANDARD $TOP_STD)" "$SRC/CMakeLists.txt"
        grep -q 'set(CMAKE_CXX_STANDARD 20)' "$SRC/horovod/torch/CMakeLists.txt"
        # (2) CPU build: FindPytorch.cmake asks torch whether it was built with CUDA (the
        #     pinned torch is a CUDA build) and then requires a full CUDA toolkit, which a CPU
        #     machine lacks ("Could NOT find CUDAToolkit"). Force the probe to False -> PyTorch +
        #     Gloo build. A GPU build (HOROVOD_GPU_OPERATIONS=NCCL) keeps the probe.
        if [ "$VARIANT" = cpu ]; then
            FP=$SRC/cmake/Modules/FindPytorch.cmake
            # The probe ends in: string(TOUPPER "${Pytorch_CUDA}" Pytorch_CUDA) -- override after it.
            sed -i 's/^string(TOUPPER "${Pytorch_CUDA}" Pytorch_CUDA)$/&\nset(Pytorch_CUDA "FALSE")  # hpclab: CPU (gloo) build/' "$FP"
            grep -q '^set(Pytorch_CUDA "FALSE")' "$FP"
        fi
        # ---------------------------------------------------------------------------------------

        mkdir -p "$WHEEL_DIR"
        export PATH=/usr/bin:$PATH   # Debian's cmake ahead of any pip cmake
        export HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
               HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
        export MAKEFLAGS=-j"$(nproc)"
        log "pip wheel --no-build-isolation (about 9 minutes on 2 cores)"
        pip_ wheel --no-build-isolation --no-deps -w "$BUILD/wheel" "$SRC"
        mv "$BUILD"/wheel/horovod-"$HOROVOD_VERSION"-*.whl "$WHEEL_DIR"/
        rm -rf "$BUILD"
        WHEEL=$(ls "$WHEEL_DIR"/horovod-"$HOROVOD_VERSION"-*.whl | head -n1)
        log "cached $WHEEL"
    else
        log "cached Horovod wheel: $WHEEL"
    fi
    pip_ install --quiet --force-reinstall --no-deps "$WHEEL"
    pip_ install --quiet "$WHEEL"      # its runtime dependencies (cloudpickle, cffi, psutil, pyyaml, packaging)
    BUILD_INFO=$("$VENV/bin/horovodrun" --check-build)
    grep -q '\[X\] PyTorch' <<<"$BUILD_INFO" || { echo "$BUILD_INFO" >&2; echo "Horovod lacks PyTorch" >&2; exit 1; }
    log "horovod: $(grep '\[X\]' <<<"$BUILD_INFO" | sed 's/ *\[X\] //; s/ *$//' | sort -u | paste -sd, -)"
fi

echo "$STAMP_KEY" >"$VENV/.dl-installed"
log "done: $VENV"
