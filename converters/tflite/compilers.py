"""Accelerator compilers run on the INT8 .tflite (a target's ``tflite_compiler``): Google's edgetpu_compiler.

The Edge TPU delegate (libedgetpu) runs only what edgetpu_compiler turned into its one custom op: given the
plain full-integer model it maps nothing and the whole graph runs on the CPU. The compiled
``<name>_edgetpu.tflite`` cannot run without an Edge TPU (the CPU interpreter has no kernel for that custom
op), so on the host it cannot be checked against FP32 the way every artifact is. The plain model stays the
checked artifact; the compiled one ships next to it (``compiled_file``, checksummed) and its record says what
the compiler mapped and that it was not run here.

edgetpu_compiler is a Debian package (``edgetpu-compiler``) from Google's Coral apt repository, x86-64 only.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeRuntimeError, first_line
from edge_runtime.manifest import sha256_file

log = logging.getLogger(__name__)
EDGETPU_COMPILER = "edgetpu_compiler"
COMPILE_TIMEOUT_S = 600  # the compiler's own limit is 180 s per model (its -t); this one catches a hang
_MAPPED = "Mapped to Edge TPU"
# a row of the compiler's operation log: "CONV_2D                        55         Mapped to Edge TPU"
_LOG_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def edgetpu_command(model: Path, out_dir: Path) -> list[str]:
    return [EDGETPU_COMPILER, "-s", "-o", str(out_dir), str(model)]


def compile_for_edgetpu(model: Path, shipped_as: Path, progress: Callable[[str], None] = lambda msg: None
                        ) -> dict[str, Any]:
    """Compile ``model`` (a full-integer .tflite) with edgetpu_compiler into ``<stem>_edgetpu.tflite`` beside it.

    Returns the artifact fields to record: ``compiled_file``, ``compiled_sha256`` and ``compiled`` (compiler
    version, ops mapped to the Edge TPU and left on the CPU, ``checked`` False). When edgetpu_compiler is not
    on PATH: one warning saying the model will run on the CPU and the command that compiles it (``shipped_as``:
    where the model will lie, for that command), and {}. A compiler that fails is an error."""
    compiled_name = f"{model.stem}_edgetpu.tflite"
    if shutil.which(EDGETPU_COMPILER) is None:
        command = " ".join(edgetpu_command(shipped_as, shipped_as.parent))
        log.warning("%s is not installed: %s will run on the CPU (the Edge TPU delegate runs only a compiled "
                    "model); compile it with: %s, or install edgetpu-compiler (Google's Coral apt repository, "
                    "x86-64) and convert again to ship %s in the package", EDGETPU_COMPILER, shipped_as.name,
                    command, compiled_name)
        return {}
    progress(f"tflite int8: compiling {model.name} with {EDGETPU_COMPILER}")
    with tempfile.TemporaryDirectory(prefix=".edgetpu-", dir=model.parent) as tmp:
        out = Path(tmp)
        try:
            proc = subprocess.run(edgetpu_command(model, out), capture_output=True, text=True,
                                  timeout=COMPILE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise EdgeRuntimeError(f"{model}: {EDGETPU_COMPILER} did not finish in {COMPILE_TIMEOUT_S} s") from None
        except OSError as exc:  # on PATH but not executable, wrong architecture
            raise EdgeRuntimeError(f"{model}: cannot run {EDGETPU_COMPILER} ({first_line(exc)})") from None
        produced = out / compiled_name
        if proc.returncode != 0 or not produced.is_file():
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise EdgeRuntimeError(f"{model}: {EDGETPU_COMPILER} failed (exit status {proc.returncode}): {last}")
        on_tpu, on_cpu = _operation_counts(out / f"{model.stem}_edgetpu.log")
        shutil.move(produced, model.parent / compiled_name)
    version = re.search(r"Edge TPU Compiler version (\S+)", proc.stdout)
    record = {"for": "Edge TPU (libedgetpu)",
              "compiler": f"{EDGETPU_COMPILER} {version[1] if version else '(version not reported)'}",
              "ops_on_accelerator": on_tpu, "ops_on_cpu": on_cpu, "checked": False,
              "note": f"runs only through the Edge TPU delegate with an Edge TPU attached: not run on the host; "
                      f"the check against FP32 is of {model.name}"}
    progress(f"tflite int8: {compiled_name}: {sum(on_tpu.values())} ops on the Edge TPU, "
             f"{sum(on_cpu.values())} on the CPU")
    return {"compiled_file": compiled_name, "compiled_sha256": sha256_file(model.parent / compiled_name),
            "compiled": record}


def _operation_counts(log_file: Path) -> tuple[dict[str, int], dict[str, int]]:
    """(op -> count mapped to the Edge TPU, "op: why not" -> count left on the CPU) from the compiler's log."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError as exc:
        raise EdgeRuntimeError(f"{log_file}: {EDGETPU_COMPILER} wrote no readable operation log "
                               f"({first_line(exc)})") from None
    on_tpu: dict[str, int] = {}
    on_cpu: dict[str, int] = {}
    for row in filter(None, map(_LOG_ROW.match, text.splitlines())):
        op, count, status = row[1], int(row[2]), row[3]
        where, key = (on_tpu, op) if status == _MAPPED else (on_cpu, f"{op}: {status}")
        where[key] = where.get(key, 0) + count
    if not on_tpu and not on_cpu:
        raise EdgeRuntimeError(f"{log_file}: no operation table in {EDGETPU_COMPILER}'s log")
    return on_tpu, on_cpu


# a target's ``tflite_compiler`` -> the function that runs it
COMPILERS: dict[str, Callable[[Path, Path, Callable[[str], None]], dict[str, Any]]] = {
    EDGETPU_COMPILER: compile_for_edgetpu,
}
