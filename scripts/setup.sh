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
python -m pip install -q -e ".[convert,onnx,openvino,tflite,validate,dev]"
# onnx2tf and tf-keras declare pins that fight numpy 2 and the rest of this environment; they run
# fine without them (../shared/docs/toolchain.md), so they come without their dependencies
python -m pip install -q --no-deps "onnx2tf==1.29.24" "tf-keras==2.21.0"
python - <<'PY'
import cv2, onnxruntime, openvino, tensorflow, torch
print(f"torch {torch.__version__} | onnxruntime {onnxruntime.__version__} | openvino {openvino.__version__} "
      f"| tensorflow {tensorflow.__version__} | opencv {cv2.__version__}")
PY
# Debian's chromium drives the headless web-view test (tests/test_web_view.py skips without it); only
# where apt-get exists and we are root or sudo needs no password, and never a reason for setup to fail
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then AS_ROOT=(); else AS_ROOT=(sudo -n); fi
  if command -v apt-get >/dev/null && "${AS_ROOT[@]}" true 2>/dev/null; then
    { "${AS_ROOT[@]}" apt-get update -qq &&
      "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } ||
      echo "note: apt-get could not install chromium; the web view test will be skipped"
  else
    echo "note: chromium is not installed (needs apt-get and root or passwordless sudo); the web view test will be skipped"
  fi
fi
