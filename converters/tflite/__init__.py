"""FP32 ONNX -> TFLite (``model_fp32.tflite``, ``model_fp16.tflite``, ``model_int8.tflite``) via onnx2tf.

onnx2tf converts from the package alone (no torch, no checkpoint); why it over litert-torch, and
the measurements behind every step: docs/tflite.md. The steps, one module each:

- ``onnx_rewrite``: an exact ONNX rewrite that keeps onnx2tf's graph quantisable;
- ``onnx2tf_run``: onnx2tf in memory, and a check of what it produced (it hides failures);
- ``int8``: calibration, range refinement, bias correction, the accuracy-budget search;
- ``naming``: the ONNX input/output names and shapes on the TFLite model.

``job.options``: ``tflite_io`` = "float32" (default), "int8" or "uint8" for the INT8 model's input/output
type (quantised I/O is what NPU delegates such as the Edge TPU need; the whole graph is then
integer); ``tflite_compiler`` = "edgetpu_compiler" compiles the INT8 model for its accelerator
(``compilers``); ``tflite_calibration`` = "mse" (default) or "minmax"; ``tflite_float_stem`` /
``tflite_float_tail`` (default True, float I/O only); ``tflite_bias_correction`` = False (default),
"auto" or True.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from typing import Any

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.versions import package_version

from ..convert_job import ConvertJob, ConvertResult
from .compilers import COMPILERS
from .int8 import quantize_int8
from .naming import rename_to_onnx_names
from .onnx2tf_run import TfGraph, tf_graph

IO_TYPES = ("float32", "int8", "uint8")


def _converter(graph: TfGraph) -> Any:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([graph.function], graph.keras)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def _quiet_convert(converter: Any) -> bytes:
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def convert_tflite(job: ConvertJob) -> ConvertResult:
    """Write ``model_<precision>.tflite`` into the package; see the module docstring."""
    io_type = str(job.options.get("tflite_io", "float32"))
    if io_type not in IO_TYPES:
        raise EdgeRuntimeError(f"tflite_io must be one of {', '.join(IO_TYPES)}, got {io_type!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines
    try:
        import onnx2tf  # noqa: F401  (checked here so a missing one is a clear error)
        import tensorflow as tf
    except ImportError as exc:
        raise EdgeRuntimeError(f"TFLite conversion needs {exc.name}: pip install 'edge-runtime[convert]', then "
                               f"pip install --no-deps onnx2tf==1.29.24 tf-keras==2.21.0 (a second step: their "
                               f"declared pins fight numpy 2)") from None

    graph = tf_graph(job)
    start = time.perf_counter()
    role_order = list(job.manifest.artifact("onnx", "fp32").outputs)
    if graph.fp32 is None and job.precision in ("fp32", "int8"):
        graph.fp32 = _quiet_convert(_converter(graph))
    extra: dict[str, Any] = {}
    if job.precision == "fp32":
        content = graph.fp32
    elif job.precision == "fp16":
        converter = _converter(graph)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        content = _quiet_convert(converter)
        extra["weights"] = "float16 (dequantised to float32 at load on CPUs without FP16 arithmetic)"
    elif job.precision == "int8":
        content, extra["quantization"] = quantize_int8(graph, job, graph.fp32, io_type)
    else:
        raise EdgeRuntimeError(f"no TFLite conversion for precision {job.precision!r}")
    content, outputs = rename_to_onnx_names(content, graph, role_order)
    name = f"model_{job.precision}.tflite"
    (job.out_dir / name).write_bytes(content)  # convert's fresh staging folder: moved in by os.replace
    if job.precision == "int8" and (compiler := job.options.get("tflite_compiler")):
        if compiler not in COMPILERS:
            raise EdgeRuntimeError(f"tflite_compiler must be one of {', '.join(COMPILERS)}, got {compiler!r}")
        extra.update(COMPILERS[compiler](job.out_dir / name, job.manifest.root / name, job.progress))
    h, w = job.manifest.input.size_hw
    extra = {
        "input": {"name": graph.input_name, "shape": [1, h, w, 3], "layout": "NHWC"},
        "converter": {"name": "onnx2tf", "onnx2tf": package_version("onnx2tf"), "tensorflow": tf.__version__,
                      "onnx_rewrites": graph.rewrites,
                      **({"outputs_transposed": graph.transposed} if graph.transposed else {})},
        **extra,
        "convert_seconds": round(graph.seconds + time.perf_counter() - start, 1),
    }
    graph.seconds = 0.0  # the onnx2tf step is counted once, with the first precision
    return ConvertResult(file=name, outputs=outputs, extra=extra)
