"""ncnn FP32 / FP16 from the package's FP32 ONNX, with pnnx (Tencent's converter, on the package index).

Before pnnx sees the graph, each MatMul by a constant vector (a distribution integral,
softmax(x) @ [0..reg_max], as NanoDet heads exported elsewhere write it; this project's export writes the
one-column form itself) becomes a MatMul by a one-column matrix plus a Reshape: ncnn runs the former with
a slow generic broadcasting MatMul, the latter as a Gemm (docs/formats-and-int8.md has the timings). A
ReduceSum would do too, but this pnnx writes its reduction axes empty (a no-op).

INT8 is not offered: ncnn quantises with its ncnn2table / ncnn2int8 tools, which neither the ncnn
nor the pnnx wheel installs.
"""

from __future__ import annotations

import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.backends.ncnn import PARAM_MAGIC, cpu_has_fp16_arithmetic, param_inputs
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.fsutil import atomic_write_text
from edge_runtime.manifest import sha256_file
from edge_runtime.versions import package_version

from .convert_job import ConvertJob, ConvertResult

PNNX_TIMEOUT_S = 600


def pnnx_executable() -> Path:
    """The pnnx binary the ``pnnx`` wheel ships (found without importing the package, which imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeRuntimeError("converting to ncnn needs pnnx, not installed: pip install 'edge-runtime[convert]'")
    exe = Path(list(spec.submodule_search_locations)[0]) / "pnnx"
    if not exe.is_file():
        raise EdgeRuntimeError(f"{exe}: the pnnx wheel has no pnnx executable for this platform")
    return exe


def matmul_vectors_as_gemm(model: Any) -> int:
    """Rewrite, in place, each MatMul whose second input is a constant 1-D vector into a MatMul by the
    vector as one column plus a Reshape to the original output shape (ncnn: Gemm instead of its slow
    broadcasting MatMul). Numerically the same product. Returns how many were rewritten; one whose
    output shape shape inference cannot tell is left as it is."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    init = {t.name: t for t in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        vector = init.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        out_shape = shapes.get(node.output[0])
        if vector is None or len(vector.dims) != 1 or out_shape is None:
            nodes.append(node)
            continue
        stem = f"{node.name or node.output[0]}_as_gemm"
        column = numpy_helper.to_array(vector).reshape(-1, 1)
        graph.initializer.append(numpy_helper.from_array(column, f"{stem}_column"))
        graph.initializer.append(numpy_helper.from_array(np.array(out_shape, np.int64), f"{stem}_shape"))
        nodes += [helper.make_node("MatMul", [node.input[0], f"{stem}_column"], [f"{stem}_product"],
                                   name=f"{stem}_matmul"),
                  helper.make_node("Reshape", [f"{stem}_product", f"{stem}_shape"], [node.output[0]],
                                   name=f"{stem}_reshape")]
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def with_input_shape(param_text: str, channels: int, height: int, width: int) -> str:
    """The .param text with its Input layer stating the shape it was converted for (0=w 1=h 2=c): the
    backend reads it, and ncnn allocates nothing for other sizes."""
    lines = param_text.splitlines()
    for i, line in enumerate(lines[2:], 2):
        fields = line.split()
        if fields and fields[0] == "Input":
            kept = [f for f in fields[4:] if f.split("=", 1)[0] not in ("0", "1", "2")]
            lines[i] = " ".join([*fields[:4], *kept, f"0={width}", f"1={height}", f"2={channels}"])
    return "\n".join(lines) + "\n"


def convert_ncnn(job: ConvertJob) -> ConvertResult:
    import onnx

    if job.precision not in ("fp32", "fp16"):
        raise EdgeRuntimeError(f"ncnn: no converter for {job.precision} (INT8 needs ncnn2int8, which no wheel "
                               f"installs)")
    if job.manifest.input.layout != "NCHW":
        raise EdgeRuntimeError(f"{job.fp32_onnx}: ncnn takes an NCHW input, this package's is "
                               f"{job.manifest.input.layout}")
    t0 = time.perf_counter()
    fp16 = job.precision == "fp16"
    model = onnx.load(str(job.fp32_onnx))
    graph_outputs = [o.name for o in model.graph.output]
    outputs = list(job.manifest.artifact("onnx", "fp32").outputs)
    if sorted(outputs) != sorted(graph_outputs):
        raise EdgeRuntimeError(f"{job.fp32_onnx}: outputs {graph_outputs} differ from the manifest's {outputs}")
    rewritten = matmul_vectors_as_gemm(model)
    channels, height, width = (job.manifest.input.shape[1], *job.manifest.input.size_hw)
    stem = job.out_dir / f"model_ncnn_{job.precision}"
    with tempfile.TemporaryDirectory(prefix=".pnnx-", dir=job.out_dir) as tmp:
        work = Path(tmp).resolve()  # pnnx runs in it: every path it is given must not be relative
        onnx.save(model, str(work / "model.onnx"))
        files = {key: work / f"model{suffix}" for key, suffix in (
            ("pnnxparam", ".pnnx.param"), ("pnnxbin", ".pnnx.bin"), ("pnnxpy", "_pnnx.py"),
            ("pnnxonnx", ".pnnx.onnx"), ("ncnnparam", ".ncnn.param"), ("ncnnbin", ".ncnn.bin"),
            ("ncnnpy", "_ncnn.py"))}
        cmd = [str(pnnx_executable()), str(work / "model.onnx"), f"inputshape=[1,{channels},{height},{width}]f32",
               f"fp16={int(fp16)}", *(f"{key}={path}" for key, path in files.items())]
        job.progress(f"ncnn {job.precision}: pnnx")
        try:
            done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise EdgeRuntimeError(f"{job.fp32_onnx}: pnnx did not finish in {PNNX_TIMEOUT_S} s") from None
        param, weights = files["ncnnparam"], files["ncnnbin"]
        if done.returncode != 0 or not param.is_file() or not weights.is_file() or weights.stat().st_size == 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise EdgeRuntimeError(f"{job.fp32_onnx}: pnnx failed (exit {done.returncode}): {tail}")
        text = param.read_text(encoding="ascii")
        if not text.startswith(PARAM_MAGIC):
            raise EdgeRuntimeError(f"{param}: pnnx wrote no ncnn param file")
        # pnnx names the graph's outputs out0, out1, ... in the ONNX graph's output order
        blobs = [f"out{graph_outputs.index(name)}" for name in outputs]
        produced = {f for line in text.splitlines()[2:] for f in line.split()[4:] if "=" not in f}
        if missing := [b for b in blobs if b not in produced]:
            raise EdgeRuntimeError(f"{param}: pnnx wrote no output blob {missing}")
        atomic_write_text(stem.with_suffix(".param"), with_input_shape(text, channels, height, width))
        weights.replace(stem.with_suffix(".bin"))
    (input_name, _), = param_inputs(stem.with_suffix(".param"))
    extra: dict[str, Any] = {
        "converter": {"tool": "pnnx", **{d: v for d in ("pnnx", "ncnn") if (v := package_version(d))},
                      "matmul_vectors_as_gemm": rewritten},
        "input": {"name": input_name},
        "onnx_outputs": outputs,
        # what convert checks it with next: fp16 arithmetic only where this CPU has it (ARMv8.2+); an FP16
        # artifact converted on x86 is checked, and so runs everywhere, with fp16 weights and fp32 arithmetic
        "ncnn_fp16": fp16 and cpu_has_fp16_arithmetic(),
        "weights_file": stem.with_suffix(".bin").name, "weights_sha256": sha256_file(stem.with_suffix(".bin")),
        "weights_compression": "fp16" if fp16 else "none",
        "convert_seconds": round(time.perf_counter() - t0, 2)}
    return ConvertResult(file=stem.with_suffix(".param").name, outputs=blobs, extra=extra)
