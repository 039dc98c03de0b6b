#!/usr/bin/env bash
# Create the virtualenv that runs the CPU test tritonserver (the binary ships in the nvidia-pytriton wheel).
# It is separate from the main venv because that wheel's Python backend stub needs numpy<2.
#
#   tests/triton/bootstrap.sh            # creates .venv-triton/ at the repository root
#   ANYFACE_TRITON_VENV=/opt/tv tests/triton/bootstrap.sh
#
# The tests find it through ANYFACE_TRITON_VENV (default: <repo>/.venv-triton).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${ANYFACE_TRITON_VENV:-$ROOT/.venv-triton}"
PYTHON="${PYTHON:-python3}"
PYTRITON_VERSION="${PYTRITON_VERSION:-0.7.0}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip uv
"$VENV/bin/uv" pip install --python "$VENV/bin/python" \
    "nvidia-pytriton==$PYTRITON_VERSION" "numpy<2" onnxruntime
# self-check: binary, Python backend stub for this Python, shared libraries (prints the install, or fails)
ANYFACE_TRITON_VENV="$VENV" "$VENV/bin/python" "$ROOT/tests/triton_server.py"
touch "$VENV/.bootstrapped"  # a complete install (a make target can depend on this file)
echo "triton venv ready: $VENV"
