#!/usr/bin/env bash
# Fresh-machine set-up: a venv in .venv with the host tool chain, the ONNX Runtime backend and the
# test tools. torch is installed first and pinned (the CPU wheel); anything unpinned would pull CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[convert,onnx,dev]"
python -c "import torch, onnxruntime, cv2; print('torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| opencv', cv2.__version__)"
