"""ncnn backend: a ``.param`` graph with its ``.bin`` weights beside it (same stem), as ``convert --to ncnn``
writes them with pnnx.

ncnn has no batch axis: the input is fed as C x H x W and every output gets a leading 1 back, so the
outputs have the shapes of the ONNX graph the artifact was converted from.

Options (all optional):
  ``fp16_compute``  on a CPU with fp16 arithmetic (ARMv8.2+ asimdhp): fp16 storage and arithmetic; elsewhere
                    fp32 (x86's fp16 storage only converts: 2.6x slower on NanoDet-Plus-m). False (the
                    default) keeps every tensor in fp32, which ncnn's own default does not on ARMv8.2. A
                    package's manifest sets it only through ``ncnn_fp16``: true only when convert checked
                    the artifact against FP32 with fp16 arithmetic on (on a CPU that has it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelLoadError
from ..versions import package_version
from .base import MAX_INPUT_SIDE, Backend, TensorSpec

# the text header of a .param file (ncnn's own constant)
PARAM_MAGIC = "7767517"


def param_inputs(path: Path) -> list[tuple[str, tuple[int | str, ...]]]:
    """(blob name, N x C x H x W shape) of each ``Input`` layer of a .param file; a dimension the file
    does not state (ncnn's Input takes any size unless its 0=w 1=h 2=c are set) is a name."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read ncnn param file: {exc}") from None
    if not lines or lines[0].strip() != PARAM_MAGIC:
        raise ModelLoadError(f"{path}: not an ncnn param file (first line is not {PARAM_MAGIC})")
    found = []
    for number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if len(fields) < 5 or fields[0] != "Input":
            continue
        try:
            n_in, n_out = int(fields[2]), int(fields[3])
            name = fields[4 + n_in] if n_out else fields[1]
            params = dict(f.split("=", 1) for f in fields[4 + n_in + n_out:] if "=" in f)
            dims = [int(params[k]) if k in params else axis for k, axis in (("2", "c"), ("1", "h"), ("0", "w"))]
        except (ValueError, IndexError):
            raise ModelLoadError(f"{path}: line {number}: malformed Input layer: {line.strip()[:80]!r}") from None
        if any(isinstance(d, int) and not 1 <= d <= MAX_INPUT_SIDE for d in dims):
            raise ModelLoadError(f"{path}: line {number}: Input size {dims} outside 1..{MAX_INPUT_SIDE}")
        found.append((name, (1, *dims)))
    return found


def cpu_has_fp16_arithmetic() -> bool:
    """ncnn computes in fp16 on this CPU when asked (ARMv8.2+ asimdhp); False without ncnn."""
    try:
        import ncnn
    except ImportError:
        return False
    return bool(ncnn.cpu_support_arm_asimdhp())


class NcnnBackend(Backend):
    name = "ncnn"
    format = "ncnn"
    precisions = ("fp32", "fp16", "int8")  # int8: made by ncnn2int8 (not by convert)
    libraries = (("ncnn", "ncnn"),)
    extra = "ncnn"
    option_keys = frozenset({"fp16_compute"})
    no_layer_profiler = "ncnn's Python package has no per-layer profiler (build ncnn with NCNN_BENCHMARK)"

    def __init__(self, path: Path, threads: int, options: dict[str, Any] | None = None) -> None:
        super().__init__(path, threads, options)
        try:
            import ncnn
        except ImportError:
            raise BackendUnavailableError(f"{path}: ncnn is not installed (pip install 'edge-runtime[ncnn]')") from None
        self._ncnn = ncnn
        weights = self.path.with_suffix(".bin")
        if not weights.is_file():
            raise ModelLoadError(f"{weights}: the weights of {self.path.name} are missing")
        inputs = param_inputs(self.path)
        if len(inputs) != 1:
            raise ModelLoadError(f"{path}: has {len(inputs)} Input layers; an image detector has one")
        self.fp16 = bool(self.options.get("fp16_compute", False)) and cpu_has_fp16_arithmetic()
        net = ncnn.Net()
        net.opt.num_threads = threads
        for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
            setattr(net.opt, flag, self.fp16)
        net.opt.use_bf16_storage = False
        # ncnn returns non-zero (and prints to stderr) on a malformed file instead of raising
        if net.load_param(str(self.path)) != 0 or net.load_model(str(weights)) != 0:
            raise ModelLoadError(f"{path}: ncnn cannot load this param/bin pair (corrupt, truncated or "
                                 f"from a newer ncnn?)")
        self.net = net
        name, shape = inputs[0]
        self.inputs = [TensorSpec(name, shape, "float32")]
        self._output_names = sorted(net.output_names())
        self.outputs = [TensorSpec(o, (), "float32") for o in self._output_names]
        if all(isinstance(d, int) for d in shape):  # shapes of the outputs: one run on zeros
            probe = self.run({name: np.zeros(shape, np.float32)})
            self.outputs = [TensorSpec(o, probe[o].shape, "float32") for o in self._output_names]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ncnn = self._ncnn
        ex = self.net.create_extractor()
        for name, array in inputs.items():
            if array.ndim != 4 or array.shape[0] != 1:
                raise ValueError(f"{self.path}: ncnn runs one image at a time (1xCxHxW), got {array.shape}")
            # a copy: ncnn runs some first layers in place (ReLU, Sigmoid, x/255), writing into its input
            # (a Mat borrowing numpy's memory crashed the process)
            mat = ncnn.Mat(np.ascontiguousarray(array[0], dtype=np.float32)).clone()
            ex.input(name, mat)
        out = {}
        for name in self._output_names:
            status, mat = ex.extract(name)
            if status != 0:
                raise ModelLoadError(f"{self.path}: ncnn failed to compute output {name!r} (status {status})")
            out[name] = np.array(mat)[None]
        return out

    def describe(self) -> str:
        version = f"ncnn {package_version('ncnn') or ''}".rstrip()
        return f"{version} CPU, {'fp16' if self.fp16 else 'fp32'} arithmetic, {self.threads} threads"

    @classmethod
    def weights_file(cls, model_file: str) -> str | None:
        return str(Path(model_file).with_suffix(".bin"))

    @classmethod
    def recorded_options(cls, artifact_extra: dict[str, Any]) -> dict[str, Any]:
        """``ncnn_fp16``: the artifact was checked with fp16 arithmetic and runs so where the CPU has it."""
        value = artifact_extra.get("ncnn_fp16")
        return {"fp16_compute": value} if isinstance(value, bool) else {}
