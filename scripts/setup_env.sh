#!/usr/bin/env bash
# Create .venv and install rlkit2 into it. The CPU build of torch goes in first when there is no NVIDIA GPU:
# an unpinned `torch` from PyPI is a multi-GB CUDA build.
#   usage: scripts/setup_env.sh [extras]      e.g. scripts/setup_env.sh dev   or   scripts/setup_env.sh dev,bench
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${1:-}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "[setup] NVIDIA GPU found: installing torch==$TORCH_VERSION (CUDA build)"
        $PIP install -q "torch==$TORCH_VERSION"
    else
        echo "[setup] no GPU: installing the CPU build of torch==$TORCH_VERSION"
        # PyTorch's CPU index first; where it is unreachable, a local/mirrored torch==$TORCH_VERSION.
        $PIP install -q --retries 0 --timeout 15 "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX" 2>/dev/null \
            || $PIP install -q "torch==$TORCH_VERSION"
    fi
fi
SPEC="."
[ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"
$PIP install -q -e "$SPEC"
"$VENV/bin/python" -c "import torch, gymnasium, mujoco, ale_py; print(f'[setup] torch {torch.__version__} (cuda: {torch.cuda.is_available()}), gymnasium {gymnasium.__version__}, mujoco {mujoco.__version__}, ale-py {ale_py.__version__}')"
