#!/usr/bin/env bash
# Build (once) and cache an emulated arm64 "Raspberry Pi 4" Python for the device side of edge-runtime.
#
#   scripts/arm64_rootfs.sh [CACHE_DIR]      default: ${XDG_CACHE_HOME:-~/.cache}/edge-runtime/arm64
#   CACHE_DIR/run-arm64-python -c 'import platform; print(platform.machine())'    -> aarch64
#
# What it makes under CACHE_DIR (each step is skipped when its stamp says it is already done):
#   rootfs/    Debian bookworm arm64 (python3 3.11), first stage of `debootstrap --foreign`, the debs
#              unpacked with tar (no second stage, no chroot, no binfmt needed)
#   wheels/    the aarch64 wheels (pip download --platform ... --only-binary=:all:), kept for rebuilds
#   site/      those wheels installed with pip --target, plus this repo's edge_runtime copied as pure
#              Python (refreshed on every run): numpy, opencv-python-headless, onnxruntime,
#              ai-edge-litert, ncnn. No torch, tensorflow, onnx or openvino.
#   prefix/    the qemu -L prefix: symlinks into rootfs plus a fake Raspberry Pi 4 /proc/cpuinfo and a
#              4-core /sys/devices/system/cpu tree (onnxruntime segfaults at import and LiteRT at its
#              first inference when they read the host's x86 /proc/cpuinfo)
#   run-arm64-python   runs rootfs/usr/bin/python3 under qemu-aarch64-static (QEMU_CPU=cortex-a72; another
#              CPU model with EDGE_RUNTIME_ARM64_CPU=cortex-a76, the Pi 5's, with dot products)
#              with PYTHONPATH=site; arguments are passed through unchanged
#
# Needs: debootstrap, qemu-aarch64-static (package qemu-user-static) and dpkg-deb; installed with apt-get
# when missing and this runs as root or `sudo -n` works. The debootstrap step runs as root (the same way).
# Network: the Debian mirror (from /etc/apt/sources*, or $ARM64_MIRROR) and PyPI on the first run.
# Exit status: 0 ready; 3 the tools are missing and cannot be installed here (callers may skip);
# 1 anything else (one line on stderr says why).
# Emulated code runs ~150x slower than native: never quote its timings as Pi figures.
set -euo pipefail
umask 022

SUITE=bookworm
PY_PACKAGES=(numpy opencv-python-headless onnxruntime ai-edge-litert ncnn)
# pip takes each --platform literally (no "this glibc or older"), so list every manylinux tag that
# bookworm's glibc 2.36 runs: with only 2014/2_17/2_28, ai-edge-litert falls back to 1.4.0 because
# 2.x ships manylinux_2_27_aarch64 wheels only
PIP_PLATFORM=(--platform manylinux2014_aarch64)
for glibc_minor in $(seq 17 36); do PIP_PLATFORM+=(--platform "manylinux_2_${glibc_minor}_aarch64"); done
PIP_PLATFORM+=(--only-binary=:all: --python-version 3.11 --implementation cp)
PREFIX_VERSION=1  # bump when the fake cpuinfo / cpu tree below changes

T0=$SECONDS
say() { printf 'arm64_rootfs: %s\n' "$*"; }
DIED=
die() { DIED=1; printf 'arm64_rootfs: %s\n' "$1" >&2; exit "${2:-1}"; }  # die MESSAGE [STATUS]
on_exit() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -z "$DIED" ]; then
        printf 'arm64_rootfs: failed (exit %s) after %s s; see the output above\n' "$status" "$((SECONDS - T0))" >&2
    fi
}
trap on_exit EXIT

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runtime/arm64}
mkdir -p -- "$CACHE" || die "cannot create the cache folder $CACHE"
CACHE=$(cd -- "$CACHE" && pwd)
ROOTFS=$CACHE/rootfs
SITE=$CACHE/site
WHEELS=$CACHE/wheels
PREFIX=$CACHE/prefix
PYTHON=${PYTHON:-python3}  # the host python whose pip downloads the aarch64 wheels

# one build at a time per cache folder
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.lock"
    flock 9
fi

# ---- privileges and tools ---------------------------------------------------------------------------------
if [ "$(id -u)" -eq 0 ]; then
    AS_ROOT=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    AS_ROOT=(sudo -n)
else
    AS_ROOT=(false)  # no way to become root
fi
can_root() { [ "${AS_ROOT[0]:-}" != false ]; }

missing_tools() {  # the Debian packages of the tools that are not on PATH, space-separated
    local absent=()
    command -v debootstrap >/dev/null 2>&1 || absent+=(debootstrap)
    command -v qemu-aarch64-static >/dev/null 2>&1 || absent+=(qemu-user-static)
    command -v dpkg-deb >/dev/null 2>&1 || absent+=(dpkg)
    echo "${absent[*]}"
}
PATH=$PATH:/usr/sbin:/sbin
missing=$(missing_tools)
if [ -n "$missing" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        die "missing $missing and there is no apt-get to install it" 3
    fi
    if ! can_root; then
        die "missing $missing; installing it needs root or passwordless sudo (sudo -n):\
 apt-get install debootstrap qemu-user-static binfmt-support" 3
    fi
    say "installing debootstrap qemu-user-static binfmt-support with apt-get"
    t=$SECONDS
    apt_log=$CACHE/apt-get.log
    apt_install() {
        "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends \
            debootstrap qemu-user-static binfmt-support >>"$apt_log" 2>&1
    }
    : > "$apt_log"
    if ! apt_install; then
        "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 update -q >>"$apt_log" 2>&1 || true
        if ! apt_install; then
            tail -n 5 -- "$apt_log" >&2
            die "apt-get could not install debootstrap qemu-user-static binfmt-support (log: $apt_log)" 3
        fi
    fi
    say "apt-get install took $((SECONDS - t)) s"
    missing=$(missing_tools)
    [ -z "$missing" ] || die "still missing after apt-get: $missing" 3
fi
QEMU=$(command -v qemu-aarch64-static)
DEBOOTSTRAP=$(command -v debootstrap)

# ---- the Debian mirror: $ARM64_MIRROR, else the first one apt uses for the suite, else deb.debian.org ----
mirror_from_apt() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] || continue
        # deb822: the URIs of a stanza whose Suites include $SUITE
        awk -v suite="$SUITE" '
            /^[ \t]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            END { if (uri != "" && ok) print uri }' "$file" | head -n1
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$file" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" { u = ($2 ~ /^\[/) ? $3 : $2; s = ($2 ~ /^\[/) ? $4 : $3;
                                              if (s == suite) { print u; exit } }' "$file"
    done
}
MIRROR=${ARM64_MIRROR:-$(mirror_from_apt | grep -E '/debian/?$' | head -n1 || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
case $MIRROR in
    http://*|https://*|file:///*) ;;
    *) die "the Debian mirror must be an http(s):// or file:/// URL, got: $MIRROR" ;;
esac
[[ $MIRROR =~ ^[A-Za-z0-9+.:/_~%@=-]+$ ]] || die "unexpected characters in the Debian mirror URL: $MIRROR"

# ---- 1. rootfs --------------------------------------------------------------------------------------------
ROOTFS_STAMP=$ROOTFS/.edge-runtime-rootfs
if [ -f "$ROOTFS_STAMP" ] && [ -x "$ROOTFS/usr/bin/python3" ]; then
    say "rootfs: present ($(cat "$ROOTFS_STAMP")), skipped"
else
    can_root || die "building the rootfs runs debootstrap, which needs root or passwordless sudo (sudo -n)" 3
    say "rootfs: debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 $SUITE from $MIRROR"
    t=$SECONDS
    tmp=$CACHE/rootfs.partial
    "${AS_ROOT[@]}" rm -rf -- "$tmp"
    mkdir -p -- "$tmp"
    log=$CACHE/debootstrap.log
    if ! "${AS_ROOT[@]}" "$DEBOOTSTRAP" --foreign --arch=arm64 --variant=minbase --include=python3 \
            "$SUITE" "$tmp" "$MIRROR" >"$log" 2>&1; then
        tail -n 5 -- "$log" >&2
        die "debootstrap failed (full log: $log)"
    fi
    debs=("$tmp"/var/cache/apt/archives/*.deb)
    [ -e "${debs[0]}" ] || die "debootstrap downloaded no packages (log: $log)"
    say "rootfs: downloaded ${#debs[@]} debs in $((SECONDS - t)) s; unpacking them with tar"
    for deb in "${debs[@]}"; do
        dpkg-deb --fsys-tarfile "$deb" | "${AS_ROOT[@]}" tar -x --keep-directory-symlink -C "$tmp" \
            || die "could not unpack $(basename -- "$deb")"
    done
    "${AS_ROOT[@]}" rm -f -- "${debs[@]}"
    if [ "${#AS_ROOT[@]}" -gt 0 ]; then  # built with sudo: hand the tree to the user who runs the emulator
        "${AS_ROOT[@]}" chown -R --no-dereference "$(id -u):$(id -g)" "$tmp"
    fi
    [ -x "$tmp/usr/bin/python3" ] || die "the unpacked rootfs has no usr/bin/python3"
    pyver=$(readlink "$tmp/usr/bin/python3" || echo python3)
    printf '%s arm64 %s, %s, built %s\n' "$SUITE" "$pyver" "${#debs[@]} debs" "$(date -u +%FT%TZ)" \
        > "$tmp/.edge-runtime-rootfs"
    rm -rf -- "$ROOTFS"
    mv -- "$tmp" "$ROOTFS"
    say "rootfs: built in $((SECONDS - t)) s, $(du -sm "$ROOTFS" | cut -f1) MB"
fi

# ---- 2. aarch64 wheels and SITE -------------------------------------------------------------------------
SPEC="${PY_PACKAGES[*]} | ${PIP_PLATFORM[*]}"
SITE_STAMP=$SITE/.edge-runtime-site
if [ -f "$SITE_STAMP" ] && [ "$(head -n1 "$SITE_STAMP")" = "$SPEC" ]; then
    say "site: present ($(sed -n 2p "$SITE_STAMP")), skipped"
else
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (set PYTHON=/path/to/python3 with pip)"
    t=$SECONDS
    mkdir -p -- "$WHEELS"
    say "site: pip download ${PY_PACKAGES[*]} for cp311 aarch64"
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-cache-dir "${PIP_PLATFORM[@]}" \
        --dest "$WHEELS" "${PY_PACKAGES[@]}" || die "pip could not download the aarch64 wheels"
    say "site: wheels $(du -sm "$WHEELS" | cut -f1) MB in $WHEELS, fetched in $((SECONDS - t)) s"
    t=$SECONDS
    tmp=$CACHE/site.partial
    rm -rf -- "$tmp"
    "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --find-links "$WHEELS" --no-warn-conflicts \
        "${PIP_PLATFORM[@]}" --target "$tmp" "${PY_PACKAGES[@]}" || die "pip could not install the aarch64 wheels"
    versions=$("$PYTHON" - "$tmp" <<'EOF'
import sys
from importlib.metadata import distributions
names = {"numpy", "opencv-python-headless", "onnxruntime", "ai-edge-litert", "ncnn"}
found = {d.metadata["Name"].lower(): d.version for d in distributions(path=[sys.argv[1]])}
print(" ".join(f"{n}=={found[n]}" for n in sorted(names) if n in found))
EOF
)
    # the device python is 3.11 like bookworm's; byte-compile here when the host is 3.11 too (pyc files
    # are architecture-independent), which saves the emulated interpreter from compiling on first import
    if "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        "$PYTHON" -m compileall -q -j 0 "$tmp" >/dev/null 2>&1 || true
        "$PYTHON" -m compileall -q -j 0 "$ROOTFS/usr/lib/python3.11" >/dev/null 2>&1 || true
    fi
    printf '%s\n%s\n' "$SPEC" "$versions" > "$tmp/.edge-runtime-site"
    rm -rf -- "$SITE"
    mv -- "$tmp" "$SITE"
    say "site: installed in $((SECONDS - t)) s, $(du -sm "$SITE" | cut -f1) MB: $versions"
fi
# this repo's edge_runtime, as pure Python, refreshed every run so it matches the checkout
rm -rf -- "$SITE/edge_runtime.partial"
cp -R -- "$REPO/edge_runtime" "$SITE/edge_runtime.partial"
find "$SITE/edge_runtime.partial" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -rf -- "$SITE/edge_runtime"
mv -- "$SITE/edge_runtime.partial" "$SITE/edge_runtime"
say "site: copied $REPO/edge_runtime"

# ---- 3. PREFIX: symlinks into rootfs, fake Raspberry Pi 4 cpuinfo and cpu tree -----------------------------
PREFIX_STAMP=$PREFIX/.edge-runtime-prefix
if [ -f "$PREFIX_STAMP" ] && [ "$(cat "$PREFIX_STAMP")" = "$PREFIX_VERSION $ROOTFS" ]; then
    say "prefix: present, skipped"
else
    tmp=$CACHE/prefix.partial
    rm -rf -- "$tmp"
    mkdir -p -- "$tmp"
    # the guest's system folders come from rootfs; /tmp, /home, /work, /dev ... stay the host's
    for entry in usr bin sbin lib lib64 etc var opt; do
        if [ -e "$ROOTFS/$entry" ] || [ -L "$ROOTFS/$entry" ]; then
            ln -s -- "$ROOTFS/$entry" "$tmp/$entry"
        fi
    done
    mkdir -p -- "$tmp/proc"
    {
        for cpu in 0 1 2 3; do
            printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
            printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
            printf 'CPU revision\t: 3\n\n'
        done
        printf 'Hardware\t: BCM2835\nRevision\t: c03115\nSerial\t\t: 1000000000000000\n'
        printf 'Model\t\t: Raspberry Pi 4 Model B Rev 1.5\n'
    } > "$tmp/proc/cpuinfo"
    sysdir=$tmp/sys/devices/system/cpu
    mkdir -p -- "$sysdir"
    for f in possible present online; do echo 0-3 > "$sysdir/$f"; done
    echo 3 > "$sysdir/kernel_max"
    echo > "$sysdir/offline"
    for cpu in 0 1 2 3; do
        d=$sysdir/cpu$cpu
        mkdir -p -- "$d/topology" "$d/cpufreq" "$d/regs/identification"
        echo 1 > "$d/online"
        echo "$cpu" > "$d/topology/core_id"
        echo 0 > "$d/topology/physical_package_id"
        echo 0 > "$d/topology/cluster_id"
        for f in core_siblings_list package_cpus_list cluster_cpus_list; do echo 0-3 > "$d/topology/$f"; done
        for f in thread_siblings_list core_cpus_list; do echo "$cpu" > "$d/topology/$f"; done
        printf 'f\n' > "$d/topology/core_siblings"; printf 'f\n' > "$d/topology/package_cpus"
        printf '%x\n' $((1 << cpu)) > "$d/topology/thread_siblings"
        echo 1800000 > "$d/cpufreq/cpuinfo_max_freq"
        echo 600000 > "$d/cpufreq/cpuinfo_min_freq"
        echo 1800000 > "$d/cpufreq/scaling_cur_freq"
        echo 0x00000000410fd083 > "$d/regs/identification/midr_el1"
        echo 0x0000000000000000 > "$d/regs/identification/revidr_el1"
    done
    printf '%s %s\n' "$PREFIX_VERSION" "$ROOTFS" > "$tmp/.edge-runtime-prefix"
    rm -rf -- "$PREFIX"
    mv -- "$tmp" "$PREFIX"
    say "prefix: fake Raspberry Pi 4 (Cortex-A72 x4) /proc/cpuinfo and /sys/devices/system/cpu in $PREFIX"
fi

# ---- 4. the wrapper (no paths written into it: it finds everything next to itself) -------------------------
cat > "$CACHE/run-arm64-python.partial" <<'EOF'
#!/bin/sh
# Emulated arm64 python3 (Debian bookworm, 3.11) with the device-side packages; made by
# scripts/arm64_rootfs.sh. Arguments go to python3 unchanged. ~150x slower than native.
here=$(cd "$(dirname "$0")" && pwd) || exit 1
qemu=$(command -v qemu-aarch64-static) || { echo "run-arm64-python: qemu-aarch64-static not found" >&2; exit 127; }
unset PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE
export PYTHONPATH="$here/site" PYTHONNOUSERSITE=1 QEMU_CPU="${EDGE_RUNTIME_ARM64_CPU:-cortex-a72}"
exec "$qemu" -L "$here/prefix" "$here/rootfs/usr/bin/python3" "$@"
EOF
chmod 755 "$CACHE/run-arm64-python.partial"
mv -- "$CACHE/run-arm64-python.partial" "$CACHE/run-arm64-python"

# ---- 5. smoke check ---------------------------------------------------------------------------------------
machine=$("$CACHE/run-arm64-python" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])') \
    || die "the emulated python3 does not start ($CACHE/run-arm64-python)"
case $machine in
    aarch64\ *) ;;
    *) die "the emulated python3 reports machine '$machine', not aarch64" ;;
esac
say "ready in $((SECONDS - T0)) s: $CACHE/run-arm64-python (python $machine, QEMU_CPU=cortex-a72, qemu $QEMU)"
