#!/usr/bin/env bash
# An x86-64 CPU without AVX-512 or VNNI (Intel Haswell: AVX2, FMA, F16C) for this machine's own x86-64
# Python, under qemu-user emulation:
#
#   scripts/x86_avx2.sh [CACHE_DIR]     default: ${XDG_CACHE_HOME:-~/.cache}/edge-runtime/x86-avx2
#   CACHE_DIR/run-avx2 .venv/bin/python -c 'import edge_runtime'
#
# qemu's TCG executes the AVX2 instructions itself (vpmaddubsw's 16-bit saturation included) and answers
# cpuid as a Haswell, so numpy, ONNX Runtime and OpenVINO dispatch their AVX2 kernels. qemu-user passes
# the host's /proc/cpuinfo through; the -L prefix made here holds a Haswell one, so edge_runtime's host
# detection sees the CPU the kernels see. Use it for what a CPU computes, never for timings (emulated
# code runs 10-100x slower; FP32 inference ~5000x on an Intel Xeon host, where INT8 was ~1500x).
#
# Needs qemu-x86_64-static (package qemu-user-static), installed with apt-get when missing and this runs
# as root or `sudo -n` works. Exit status: 0 ready; 3 not possible here (callers may skip); 1 anything
# else (one line on stderr says why).
set -euo pipefail

die() { printf 'x86_avx2: %s\n' "$1" >&2; exit "${2:-1}"; }  # die MESSAGE [STATUS]

[ "$(uname -m)" = x86_64 ] || die "runs x86-64 code on an x86-64 host; this one is $(uname -m)" 3
CACHE=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runtime/x86-avx2}
mkdir -p -- "$CACHE/prefix/proc" || die "cannot create $CACHE"
CACHE=$(cd -- "$CACHE" && pwd)

PATH=$PATH:/usr/sbin:/sbin
if ! command -v qemu-x86_64-static >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "missing qemu-x86_64-static and there is no apt-get to install it" 3
    if [ "$(id -u)" -eq 0 ]; then
        AS_ROOT=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        AS_ROOT=(sudo -n)
    else
        die "missing qemu-x86_64-static; installing it needs root or passwordless sudo: apt-get install qemu-user-static" 3
    fi
    log=$CACHE/apt-get.log
    install() {
        "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 install -y -q --no-install-recommends \
            qemu-user-static >>"$log" 2>&1
    }
    : > "$log"
    if ! install; then
        "${AS_ROOT[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 update -q >>"$log" 2>&1 || true
        install || die "apt-get could not install qemu-user-static (log: $log)" 3
    fi
    command -v qemu-x86_64-static >/dev/null 2>&1 || die "still no qemu-x86_64-static after apt-get" 3
fi
QEMU=$(command -v qemu-x86_64-static)
CPU=Haswell-v4,-pcid,-x2apic,-tsc-deadline,-invpcid,-spec-ctrl
# the features TCG cannot emulate are switched off, so qemu does not warn about each on every start
"$QEMU" -cpu "$CPU" /bin/true 2>/dev/null || die "$("$QEMU" --version | head -n1) cannot emulate -cpu $CPU" 3

# Two Haswell cores as Linux lists them (the flags edge_runtime reads: avx2 fma f16c, no avx512*, no vnni)
flags="fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss"
flags+=" syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology cpuid pni pclmulqdq ssse3 fma cx16"
flags+=" sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm fsgsbase bmi1 avx2 smep"
flags+=" bmi2 erms"
{
    for core in 0 1; do
        printf 'processor\t: %s\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 60\n' "$core"
        printf 'model name\t: Intel Core Processor (Haswell, no TSX, IBRS) (emulated)\n'
        printf 'physical id\t: 0\ncore id\t\t: %s\ncpu cores\t: 2\nflags\t\t: %s\n\n' "$core" "$flags"
    done
} > "$CACHE/prefix/proc/cpuinfo.tmp"
mv -f -- "$CACHE/prefix/proc/cpuinfo.tmp" "$CACHE/prefix/proc/cpuinfo"

cat > "$CACHE/run-avx2.tmp" <<EOF
#!/bin/sh
exec "$QEMU" -cpu $CPU -L "$CACHE/prefix" "\$@"
EOF
chmod +x "$CACHE/run-avx2.tmp"
mv -f -- "$CACHE/run-avx2.tmp" "$CACHE/run-avx2"
printf 'x86_avx2: %s/run-avx2 ready (%s)\n' "$CACHE" "$("$QEMU" --version | head -n1)"
