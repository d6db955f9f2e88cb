"""What this host is: physical cores and the CPU features that decide speed, read from /proc."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

_INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c", "fma",
                      "asimd", "asimddp", "asimdhp", "fphp", "neon")


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def package_version(dist: str) -> str | None:
    """Installed version of a distribution, or None when it is not installed."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores (hyper-threads share a core's SIMD units, so they rarely help inference)."""
    cores: set[tuple[str, str]] = set()
    physical = core = None
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not key and physical is not None and core is not None:
            cores.add((physical, core))
            physical = core = None
    if physical is not None and core is not None:
        cores.add((physical, core))
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(cores), logical)) if cores else max(1, logical)


@lru_cache(maxsize=1)
def cpu_summary() -> dict[str, object]:
    """Model name, architecture, core counts and the SIMD flags that matter, for benchmark headers."""
    info = _cpuinfo()
    model, flags = platform.processor() or platform.machine(), set()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and value.strip():
            model = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return {"cpu": model, "arch": platform.machine(), "physical_cores": physical_cores(),
            "logical_cpus": os.cpu_count(), "flags": [f for f in _INTERESTING_FLAGS if f in flags]}
