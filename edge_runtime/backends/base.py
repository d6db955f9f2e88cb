"""The backend interface: load an artifact, describe its tensors, run arrays in and out.

A backend class also declares what the rest of the runtime needs to know about its format (the
registry in ``backends/__init__.py`` reads these class attributes; nothing else lists formats):
the precisions it runs, the libraries and pip extra it needs, the option keys it reads, the
target-profile keys it accepts, how to list its devices, and an optional per-layer profiler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import EdgeRuntimeError

# The largest input side a package or a model file may declare: no real detector reaches it, and it keeps a
# hostile file from asking for absurd buffers (manifest.json's input.shape, an ncnn .param's Input layer).
MAX_INPUT_SIDE = 8192


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: str
    # for quantised int8/uint8 I/O: real = (q - zero_point) * scale
    scale: float | None = None
    zero_point: int | None = None


@dataclass(frozen=True)
class TargetKey:
    """A key a target profile (targets/*.toml) may set for this backend.

    ``kind``: "string", "table" (of string values) or "choice" (one of ``choices``). ``option``: the
    ``open_backend`` option it becomes, None when the converters read it (``tflite_io``). ``selects``
    marks the key that names the accelerator (delegate, execution provider, device): the targets
    table shows it, and the backend's options come from the profile only when it is set. ``needs``:
    a key of the same backend that must be set with this one."""

    name: str
    kind: str = "string"
    option: str | None = None
    choices: tuple[str, ...] = ()
    selects: bool = False
    needs: str | None = None


@dataclass(frozen=True)
class AcceleratorPackage:
    """A pip distribution that adds an accelerator to a backend's own library, e.g. ONNX Runtime's QNN
    execution-provider plugin (onnxruntime-qnn 2.x, installed next to onnxruntime). ``module``: its import
    name, which has ``get_library_path()`` (ONNX Runtime's plugin convention). ``wheels``: the platforms
    ("linux-x86_64", "windows-arm64", ...) the package index has wheels for, as last checked; ``elsewhere``:
    what to do on any other platform."""

    dist: str
    module: str
    wheels: tuple[str, ...]
    elsewhere: str


@dataclass(frozen=True)
class DeviceListing:
    """What ``targets --detect`` reports of the devices a backend's library sees.

    ``key``: the HostInfo / JSON key; ``label``: the line's label; ``library``: named when it is not
    installed; ``suggests``: device name -> the shipped target profile it fits."""

    key: str
    label: str
    library: str
    suggests: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LayerTime:
    name: str  # the backend's node name (ONNX node name, OpenVINO adds "/WithoutBiases" and the like)
    op_type: str
    exec_type: str  # ORT: execution provider; OpenVINO: the kernel (e.g. brgconv_avx512_f32)
    ms: float  # mean per run


class LayerTimings(NamedTuple):
    """What a backend's per-layer profiler measured: mean time per layer, in execution order, and the
    wall time of each whole run of the same runs."""

    layers: list[LayerTime]
    run_ms: list[float]
    backend: str  # the profiled backend's describe()
    note: str


class Backend(ABC):
    """One loaded artifact. Subclasses take (artifact path, threads, options) and nothing else,
    and fill ``inputs``/``outputs`` with the graph's tensor specs when they load it."""

    name: str = "backend"
    #: the artifact format (manifest ``artifacts[].format``) the registry keys this backend under
    format: str = ""
    #: artifact precisions it runs, in the order the CLI lists them
    precisions: tuple[str, ...] = ()
    #: those of ``precisions`` made only when asked for by name (a target or --precisions), not by default:
    #: they need hardware to be checked on that most hosts lack
    opt_in_precisions: tuple[str, ...] = ()
    #: (import name, distribution name) of the libraries that run it; any one is enough
    libraries: tuple[tuple[str, str], ...] = ()
    #: the pip extra that installs one of them
    extra: str = ""
    #: every key ``options`` may hold (a package's manifest may hold none of them)
    option_keys: frozenset[str] = frozenset()
    #: the keys a target profile may set for this backend
    target_keys: tuple[TargetKey, ...] = ()
    #: accelerator (the value of the target key that ``selects`` it) -> the distribution that brings it, where
    #: the backend's own library lacks it
    accelerator_packages: dict[str, AcceleratorPackage] = {}
    #: what host detection lists for this library, None when it lists nothing
    device_listing: DeviceListing | None = None
    #: why ``profile_layers`` is not available, when the backend has no per-layer profiler
    no_layer_profiler: str = ""
    #: (suffix of a foreign model file ``edge-runtime import`` takes, its file name in the package);
    #: None: this format is not importable
    import_file: tuple[str, str] | None = None
    #: ``run`` takes float32 for a quantised (int8/uint8) input and quantises it with the input's scale
    quantizes_inputs: bool = False
    #: its INT8 CPU kernels on x86 without VNNI/AMX add u8 x s8 products with 16-bit saturation (AVX2's
    #: vpmaddubsw), so an INT8 artifact with 8-bit weights computes other outputs there than on the CPU it
    #: was measured on (``hostfit.host_mismatch``; docs/formats-and-int8.md, "INT8 on x86 without VNNI")
    int8_saturates_without_vnni: bool = False

    def __init__(self, path: Path, threads: int, options: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        self.options = dict(options or {})
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; returns every output by name."""

    def timing_runner(self, inputs: dict[str, np.ndarray]) -> Callable[[], object]:
        """A call that runs ``inputs`` with as little around the inference as the library allows
        (outputs into buffers allocated once), for timing one layer or model; its results are not
        read. This default is ``run``."""
        return lambda: self.run(inputs)

    def describe(self) -> str:
        """Short human description, e.g. 'onnxruntime 1.32 CPUExecutionProvider, 2 threads'."""
        return f"{self.name}, {self.threads} threads"

    @classmethod
    def recorded_options(cls, artifact_extra: dict[str, Any]) -> dict[str, Any]:
        """Options from the artifact's manifest entry: only settings its converter verified it with,
        checked here value by value (a package chooses no library, device or config). None by default."""
        return {}

    @classmethod
    def weights_file(cls, model_file: str) -> str | None:
        """The file beside ``model_file`` the backend loads its weights from (an OpenVINO IR's .bin), None when
        the model file is all it reads. The manifest must list that file with its checksum (a backend
        refuses to load weights from any other file)."""
        return None

    @classmethod
    def list_devices(cls) -> list[str] | None:
        """The devices / execution providers the installed library sees; None when it is not installed
        (or fails to initialise: host detection must not stop) or lists none."""
        return None

    @classmethod
    def has_layer_profiler(cls) -> bool:
        return cls.profile_layers.__func__ is not Backend.profile_layers.__func__  # type: ignore[attr-defined]

    @classmethod
    def no_profiler_reason(cls) -> str:
        return cls.no_layer_profiler or f"per-layer latency is not available for {cls.format}"

    @classmethod
    def profile_layers(cls, path: Path, threads: int, feed: dict[str, np.ndarray], runs: int, warmup: int,
                       options: dict[str, Any] | None = None) -> LayerTimings:
        """Load ``path`` with ``options`` and the library's own profiler on, run ``feed`` ``warmup`` then
        ``runs`` times, and return the mean time of each layer over the timed runs. Called after
        ``require_installed``."""
        raise EdgeRuntimeError(cls.no_profiler_reason())
