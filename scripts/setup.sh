#!/usr/bin/env bash
# Fresh-machine set-up: a venv in .venv with the host tool chain, the ONNX Runtime backend and the
# test tools. torch is installed first and pinned (the CPU wheel); anything unpinned would pull CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}  # scripts/drift.sh builds a second one beside it
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
. "$VENV/bin/activate"
# Every install is constrained by the lock (requirements/lock.txt): the versions the tests passed
# with. EDGE_RUNTIME_UNLOCKED=1 installs the newest instead (scripts/drift.sh uses it on purpose).
LOCK=requirements/lock.txt
if [ "${EDGE_RUNTIME_UNLOCKED:-0}" = 1 ]; then C=(); else C=(-c "$LOCK"); fi
pinned() {  # the locked version of $1 ('' when unlocked), as pip's ==VERSION suffix
  [ "${#C[@]}" -gt 0 ] || return 0
  local v; v=$(grep -i -E "^$1==" "$LOCK" | head -1 | cut -d= -f3)
  [ -n "$v" ] || { echo "setup: $1 is not in $LOCK" >&2; return 1; }
  printf '==%s' "$v"
}
# resolved here, not inside pip's arguments, where a failed lookup would go unnoticed
ONNX2TF=$(pinned onnx2tf) || exit 1
TF_KERAS=$(pinned tf_keras) || exit 1
python -m pip install -q "pip==26.3"
python -m pip install -q "${C[@]}" "torch==2.13.0"
python -m pip install -q "${C[@]}" -e ".[convert,onnx,openvino,tflite,ncnn,validate,track,dev]"
# onnx2tf and tf-keras declare pins that fight numpy 2 and the rest of this environment; they run
# fine without them (../shared/docs/toolchain.md), so they come without their dependencies
python -m pip install -q --no-deps "onnx2tf$ONNX2TF" "tf-keras$TF_KERAS"
python - <<'PY'
import cv2, onnxruntime, openvino, tensorflow, torch
print(f"torch {torch.__version__} | onnxruntime {onnxruntime.__version__} | openvino {openvino.__version__} "
      f"| tensorflow {tensorflow.__version__} | opencv {cv2.__version__}")
PY
# Debian packages some tests drive for real (each test skips with the reason when its tool is absent):
# chromium (headless web-view test), openssh-server (deploy over ssh to a loopback sshd),
# debootstrap + qemu-user-static (the emulated arm64 Debian of tests/test_arm64.py). Only where apt-get
# exists and we are root or sudo needs no password, and never a reason for set-up to fail.
APT_WANTED=()
command -v chromium >/dev/null || APT_WANTED+=(chromium)
[ -x /usr/sbin/sshd ] || APT_WANTED+=(openssh-server)
command -v ssh >/dev/null || APT_WANTED+=(openssh-client)
command -v debootstrap >/dev/null || APT_WANTED+=(debootstrap)
command -v qemu-aarch64-static >/dev/null || APT_WANTED+=(qemu-user-static)
if [ "${#APT_WANTED[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then AS_ROOT=(); else AS_ROOT=(sudo -n); fi
  if command -v apt-get >/dev/null && "${AS_ROOT[@]}" true 2>/dev/null; then
    { "${AS_ROOT[@]}" apt-get -o DPkg::Lock::Timeout=120 update -qq &&
      "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -qq \
        "${APT_WANTED[@]}"; } ||
      echo "note: apt-get could not install ${APT_WANTED[*]}; the tests that need them will be skipped"
  else
    echo "note: ${APT_WANTED[*]} not installed (needs apt-get and root or passwordless sudo); their tests will be skipped"
  fi
fi
