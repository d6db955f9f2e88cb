"""onnx2tf run in memory on the rewritten ONNX graph, and a check of what it produced.

onnx2tf gives a Keras model (``disable_model_save``: no SavedModel, seconds instead of a minute),
run in a temporary working directory that holds our own preprocessed images under the file name it
would otherwise download. At its default verbosity onnx2tf hides a failed ONNX reference run and
then guesses tensor layouts (the .tflite runs but is wrong): its log is read at verbosity "warn" and
such a run is an error. The Keras model becomes one concrete function (NHWC float input -> outputs
in ONNX shapes), cached per ONNX file for the three precisions.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.versions import package_version

from ..convert_job import ConvertJob
from .onnx_rewrite import prepare_onnx

# the file onnx2tf loads from its working directory (and downloads when absent)
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@dataclass
class TfGraph:
    """onnx2tf's model of one ONNX file, what every precision's TFLite conversion starts from."""

    keras: Any
    function: Any  # concrete function: NHWC float input -> {onnx output name: tensor}
    input_name: str
    input_shape: list[int]  # NHWC
    output_shapes: dict[str, tuple[int, ...]]
    rewrites: dict[str, Any]
    seconds: float
    transposed: dict[str, list[int]] = field(default_factory=dict)
    fp32: bytes | None = None  # the FP32 flatbuffer, once made


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GRAPHS: dict[str, TfGraph] = {}  # ONNX sha256 + onnx2tf version -> graph, for the three precisions


# onnx2tf's warnings when it could not run the ONNX graph on our input: it then guesses the layout of
# every tensor whose channels = height = width, and the .tflite it makes runs but is wrong
_ONNX2TF_SKIPPED = ("shape estimation is skipped", "accuracy error measurement process was skipped")


def onnx_to_keras(model: Any, input_name: str, samples: np.ndarray, source: Path) -> Any:
    """onnx2tf's in-memory Keras model of ``model`` (an onnx.ModelProto whose input is
    ``input_name``), with ``samples`` (NHWC float32) as the data onnx2tf checks its graph on,
    never its internet download. Errors are one line naming ``source``, also when onnx2tf
    skipped its own ONNX reference run (it would convert by guessing, see _ONNX2TF_SKIPPED)."""
    import onnx
    import onnx2tf

    with tempfile.TemporaryDirectory(prefix="edge-runtime-onnx2tf-") as work:
        work_dir = Path(work)
        onnx_path = work_dir / "model.onnx"
        onnx.save(model, str(onnx_path))
        # onnx2tf always loads this file from its working directory (downloading it when absent):
        # give it our own preprocessed images instead
        np.save(work_dir / ONNX2TF_SAMPLE, samples)
        # its custom input must be ONE sample: onnx2tf >= 1.29.20 transposes it to NCHW for its
        # reference run only when the whole shape, batch included, matches the graph's input
        np.save(work_dir / "input.npy", samples[:1])
        previous = os.getcwd()
        out = io.StringIO()
        try:
            os.chdir(work_dir)
            with contextlib.redirect_stdout(out):
                keras = onnx2tf.convert(
                    input_onnx_file_path=str(onnx_path), output_folder_path=str(work_dir / "out"),
                    custom_input_op_name_np_data_path=[[input_name, str(work_dir / "input.npy")]],
                    disable_model_save=True, not_use_onnxsim=True, non_verbose=False, verbosity="warn")
        except SystemExit:  # onnx2tf reports errors with sys.exit
            tail = " ".join(out.getvalue().split())[-300:]
            raise EdgeRuntimeError(f"{source}: onnx2tf could not convert the graph: {tail}") from None
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise EdgeRuntimeError(f"{source}: onnx2tf failed: {type(exc).__name__}: {first}") from exc
        finally:
            os.chdir(previous)
    skipped = skipped_reference_run(out.getvalue())
    if skipped:
        raise EdgeRuntimeError(f"{source}: onnx2tf could not run the ONNX graph on the sample input and would guess "
                               f"tensor layouts ({skipped})")
    return keras


def skipped_reference_run(log_text: str) -> str | None:
    """onnx2tf's warning (and the error line after it) when it skipped its ONNX reference run, from
    its log at verbosity 'warn'; None when it ran."""
    lines = _ANSI.sub("", log_text).splitlines()
    for i, line in enumerate(lines):
        if any(text in line for text in _ONNX2TF_SKIPPED):
            cause = lines[i + 1].strip() if i + 1 < len(lines) else ""
            return f"{line.strip()[:120]}{'; ' + cause[:160] if cause else ''}"
    return None


def tf_graph(job: ConvertJob) -> TfGraph:
    """The package's FP32 ONNX, rewritten (``onnx_rewrite``) and converted by onnx2tf, as one function
    whose outputs have the ONNX shapes (an output onnx2tf left transposed is transposed back); an
    output or input shape that fits no permutation is an error. Cached for the other precisions."""
    art = job.manifest.artifact("onnx", "fp32")
    key = f"{art.sha256}:{package_version('onnx2tf')}"
    if key in _GRAPHS:
        return _GRAPHS[key]
    import tensorflow as tf

    start = time.perf_counter()
    spec = job.manifest.input
    h, w = spec.size_hw
    job.progress("tflite: rewriting ONNX for TFLite and converting it with onnx2tf")
    model, rewrites = prepare_onnx(job.fp32_onnx, spec.name)
    tensors = job.calibration.tensors if job.calibration is not None else [
        np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)]
    samples = np.concatenate([np.transpose(t, (0, 2, 3, 1)) for t in tensors[:20]]).astype(np.float32)
    keras = onnx_to_keras(model, spec.name, samples, job.fp32_onnx)

    onnx_shapes = {o.name: tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output}
    keras_outputs = list(keras.outputs)
    names = list(getattr(keras, "output_names", []) or [])
    if sorted(names) != sorted(onnx_shapes):
        names = list(onnx_shapes)  # onnx2tf keeps the ONNX output order
    transposed: dict[str, list[int]] = {}
    for name, tensor in zip(names, keras_outputs):
        have, want = tuple(tensor.shape), onnx_shapes[name]
        if have != want:
            perm = _permutation(have, want)
            if perm is None:
                raise EdgeRuntimeError(f"{job.fp32_onnx}: onnx2tf output {name} has shape {list(have)}, "
                                       f"ONNX has {list(want)}")
            transposed[name] = perm
    input_shape = [int(d) for d in keras.inputs[0].shape]
    if input_shape != [1, h, w, 3]:
        raise EdgeRuntimeError(f"{job.fp32_onnx}: onnx2tf made input shape {input_shape}, expected [1, {h}, {w}, 3]")

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32, name=spec.name)])
    def serve(x):
        outs = keras(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {n: (tf.transpose(o, transposed[n]) if n in transposed else o) for n, o in zip(names, outs)}

    graph = TfGraph(keras=keras, function=serve.get_concrete_function(), input_name=spec.name,
                     input_shape=input_shape, output_shapes=onnx_shapes, rewrites=rewrites,
                     seconds=time.perf_counter() - start, transposed=transposed)
    while len(_GRAPHS) >= 2:  # a convert run handles one package; keep memory bounded
        _GRAPHS.pop(next(iter(_GRAPHS)))
    _GRAPHS[key] = graph
    return graph


def _permutation(have: tuple[int, ...], want: tuple[int, ...]) -> list[int] | None:
    from itertools import permutations

    for perm in permutations(range(len(have))):
        if tuple(have[p] for p in perm) == tuple(want):
            return list(perm)
    return None
