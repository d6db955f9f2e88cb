"""CPU temperature and firmware throttling, shown beside the FPS: a hot Raspberry Pi slows down by
itself, and the FPS alone does not say why. Every field is optional (absent off Linux / off a Pi)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

THERMAL_ROOT = Path("/sys/class/thermal")
# bits of `vcgencmd get_throttled` (Raspberry Pi firmware): now / since boot
THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}


def cpu_temperature_c(root: Path = THERMAL_ROOT) -> float | None:
    """Hottest thermal zone in degrees C (the SoC zone on a Pi), or None where there is none."""
    temps = []
    for zone in root.glob("thermal_zone*/temp"):
        try:
            millideg = int(zone.read_text().strip())
        except (OSError, ValueError):
            continue
        if millideg > 0:  # some zones report 0 or negative values when they have no sensor
            temps.append(millideg / 1000.0)
    return max(temps) if temps else None


def throttling() -> dict[str, Any] | None:
    """``vcgencmd get_throttled`` decoded, or None where the binary is absent or fails."""
    binary = shutil.which("vcgencmd")
    if binary is None:
        return None
    try:
        out = subprocess.run([binary, "get_throttled"], check=False, capture_output=True, text=True,
                             timeout=2.0).stdout
        value = int(out.strip().partition("=")[2], 16)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {"raw": hex(value),
            "now": [name for bit, name in THROTTLE_BITS.items() if value >> bit & 1],
            "since_boot": [name for bit, name in THROTTLE_BITS.items() if value >> (bit + 16) & 1]}


def thermal_state() -> dict[str, Any]:
    """``{"cpu_temp_c": ..., "throttled": {...}}`` with only the fields this host can report."""
    state: dict[str, Any] = {}
    temp = cpu_temperature_c()
    if temp is not None:
        state["cpu_temp_c"] = round(temp, 1)
    throttled = throttling()
    if throttled is not None:
        state["throttled"] = throttled
    return state


def describe(state: dict[str, Any]) -> str:
    """One short phrase for the summary line, e.g. 'CPU 61.2 C, throttled now: soft temperature limit'."""
    parts = [f"CPU {state['cpu_temp_c']:.1f} C"] if "cpu_temp_c" in state else []
    if "throttled" in state:
        now = state["throttled"]["now"]
        parts.append(f"throttled now: {', '.join(now)}" if now else "not throttled")
    return ", ".join(parts)
