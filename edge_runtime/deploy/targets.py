"""Target profiles: small TOML files (``targets/*.toml``) describing a device: threads, the
backend/precision order to prefer, and how to reach its accelerator (TFLite delegate, ONNX Runtime
execution provider, OpenVINO device). A user adds a device by dropping a file, no code.

The backends, precisions and backend-specific keys a profile may name come from the backend
registry (``edge_runtime.backends``): ``Target`` has one field per key a backend declares."""

from __future__ import annotations

import site
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends import BACKENDS, AcceleratorPackage, all_precisions, default_precisions, formats, target_keys
from ..backends import formats as registered_formats  # conversion_plan has a parameter named formats
from ..backends.base import TargetKey
from ..errors import EdgeRuntimeError, first_line
from ..timing import format_table
from .hostinfo import is_x86, physical_cores

if TYPE_CHECKING:
    from ..manifest import Artifact, Manifest

STATUSES = ("supported", "future")


def search_dirs() -> list[Path]:
    """Repo checkout's targets/, the installed copy (venv or system, then ``pip install --user``'s data
    folder), then the user's own folder."""
    return [Path(__file__).resolve().parents[2] / "targets",
            Path(sys.prefix) / "share" / "edge-runtime" / "targets",
            Path(site.getuserbase()) / "share" / "edge-runtime" / "targets",
            Path.home() / ".config" / "edge-runtime" / "targets"]


class _TargetMethods:
    """One device profile. Fields past ``precisions`` are optional in the file.

    ``backends``/``precisions`` are preference orders (first = expected fastest). ``peak_gflops``
    maps a precision to the device's peak GFLOP/s (GOP/s for int8), for :func:`efficiency`.
    ``status`` "future" marks a documentation-only profile that nothing can run yet. Between ``cpu``
    and ``peak_gflops``: one field per key a backend declares (``Backend.target_keys``: delegate,
    execution provider, OpenVINO device, ...), None or an empty table when unset.
    """

    def backend_options(self, backend: str) -> dict[str, Any]:
        """Options for ``open_backend`` on this target (delegate, execution provider or device): the
        backend's keys that become options, when the profile sets the key that selects its accelerator."""
        keys = [key for fmt, key in target_keys().values() if fmt == backend and key.option]
        if not any(key.selects and getattr(self, key.name) for key in keys):
            return {}
        values = {key.option: getattr(self, key.name) for key in keys}
        return {option: dict(value) if isinstance(value, dict) else value
                for option, value in values.items() if value is not None}

    def accelerator_package(self, backend: str) -> AcceleratorPackage | None:
        """The pip distribution that brings this profile's accelerator to ``backend`` (onnxruntime-qnn for
        QNNExecutionProvider), None when the backend's own library has it or the profile selects none."""
        cls = BACKENDS.get(backend)
        if cls is None:
            return None
        selected = (getattr(self, key.name) for key in cls.target_keys if key.selects)
        return next((cls.accelerator_packages[v] for v in selected if v in cls.accelerator_packages), None)

    def require_runnable(self) -> None:
        """Raise a one-line error when this profile is documentation only (status "future")."""
        if self.status == "future":
            raise EdgeRuntimeError(f"target {self.name!r} is documentation only (status \"future\"): "
                                   f"{self.notes or 'nothing in this project runs it yet'}")

    @property
    def x86_cpu(self) -> bool:
        """An x86 CPU profile: x86 and no accelerator (delegate, execution provider, OpenVINO device)."""
        return not self.accelerator and is_x86(self.arch)

    @property
    def int8_saturates(self) -> bool:
        """Whether some CPUs of this profile multiply INT8 u8 x s8 pairs with 16-bit saturation (x86 without
        VNNI/AMX, ``hostinfo.int8_saturates``): an x86 CPU profile whose ``onnx_weight_bits`` is 7 or unset,
        the width that avoids it."""
        return self.x86_cpu and (self.onnx_weight_bits or "7") == "7"

    @property
    def accelerator(self) -> str:
        """The delegate, execution provider and/or OpenVINO device, '' for CPU-only profiles."""
        return ", ".join(v for _, key in target_keys().values() if key.selects and (v := getattr(self, key.name)))


def _key_field(key: TargetKey) -> tuple[str, Any, Any]:
    if key.kind == "table":
        return key.name, dict[str, str], field(default_factory=dict)
    return key.name, str | None, None


Target = make_dataclass(
    "Target",
    [("name", str), ("arch", str), ("description", str), ("threads", int), ("backends", tuple[str, ...]),
     ("precisions", tuple[str, ...]), ("cpu", str, ""),
     *(_key_field(key) for _, key in target_keys().values()),
     ("peak_gflops", dict[str, float], field(default_factory=dict)), ("status", str, "supported"),
     ("notes", str, "")],
    bases=(_TargetMethods,), frozen=True, namespace={"__doc__": _TargetMethods.__doc__, "__module__": __name__})


@dataclass(frozen=True)
class ConversionPlan:
    """What ``convert`` adds: every format x precision, the I/O type of TFLite INT8 models, and the target's
    other settings the converters read (``settings``: its backend keys with no runtime option, e.g.
    ``openvino_inference_precision``)."""

    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    tflite_io: str
    settings: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return (f"{','.join(self.formats)} x {','.join(self.precisions)}"
                + (f", TFLite I/O {self.tflite_io}" if self.tflite_io != "float32" else "")
                + "".join(f", {name} {value}" for name, value in self.settings.items()))


def conversion_plan(formats: Sequence[str] = (), precisions: Sequence[str] = (), tflite_io: str | None = None,
                    target: Target | None = None) -> ConversionPlan:
    """The formats, precisions and TFLite I/O given; else the target's (exactly what it runs); else
    every backend x every precision with float32 TFLite I/O. The target's other converter settings too."""
    settings: dict[str, str] = {}
    if target is not None:
        formats, precisions = formats or target.backends, precisions or target.precisions
        tflite_io = tflite_io or target.tflite_io
        settings = {name: value for name, (_, key) in target_keys().items()
                    if key.option is None and name != "tflite_io" and (value := getattr(target, name))}
    return ConversionPlan(tuple(formats or registered_formats()), tuple(precisions or default_precisions()),
                          tflite_io or "float32", settings)


def full_integer_check(manifest: Manifest, artifact: Artifact) -> tuple[bool, str] | None:
    """A full-integer delegate (Edge TPU, NXP VX) runs integer ops only and hands every float op back
    to the CPU. For a TFLite artifact: (whether the delegate can run it whole, one line describing its
    ops, read from the file); None for other formats."""
    if artifact.format != "tflite":
        return None
    from ..backends.tflite_ops import tflite_op_report

    report = tflite_op_report(manifest.artifact_path(artifact))
    whole = report.full_integer and report.integer_io
    return whole, report.describe() + ("" if whole else " (a full-integer delegate runs the rest on the CPU)")


def efficiency(macs: float, latency_ms: float, peak_gflops: float) -> float:
    """Percentage of ``peak_gflops`` reached by a model of ``macs`` multiply-accumulates per
    inference running in ``latency_ms``: one MAC counts as 2 FLOPs (the roofline convention), so
    0.9 GMACs in 10 ms is 180 GFLOP/s, i.e. 100 % of a 180 GFLOP/s peak."""
    if latency_ms <= 0 or peak_gflops <= 0:
        raise ValueError(f"latency_ms and peak_gflops must be positive (got {latency_ms}, {peak_gflops})")
    achieved_gflops = 2.0 * macs / (latency_ms * 1e-3) / 1e9
    return 100.0 * achieved_gflops / peak_gflops


def expected_latency_ms(macs: float, peak_gflops: float, percent_of_peak: float) -> float:
    """The inverse of :func:`efficiency`: the latency of a model of ``macs`` that reaches
    ``percent_of_peak`` % of ``peak_gflops``."""
    if peak_gflops <= 0 or percent_of_peak <= 0:
        raise ValueError(f"peak_gflops and percent_of_peak must be positive (got {peak_gflops}, {percent_of_peak})")
    return 2.0 * macs / (peak_gflops * 1e9 * percent_of_peak / 100.0) * 1e3


def available_targets() -> dict[str, Path]:
    """Profile name -> file; an earlier search dir wins over a later one with the same name."""
    found: dict[str, Path] = {}
    for folder in search_dirs():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else ():
            found.setdefault(path.stem, path)
    return found


def target_file(name_or_path: str) -> Path:
    """The .toml file of a profile given by name (see :func:`available_targets`) or by path."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = available_targets()
    if name_or_path not in known:
        if path.suffix == ".toml" or "/" in name_or_path:
            raise EdgeRuntimeError(f"{path}: target profile file not found")
        raise EdgeRuntimeError(f"target {name_or_path!r}: no such profile (known: {', '.join(known) or 'none'})")
    return known[name_or_path]


def load_target(name_or_path: str) -> Target:
    """A profile by name (see :func:`available_targets`) or by path to a .toml file."""
    path = target_file(name_or_path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EdgeRuntimeError(f"{path}: not a valid target profile ({first_line(exc)})") from None
    return _parse(path, data)


def runnable_target(target: str | Target) -> Target:
    """``target`` (a profile name, a .toml path or a loaded profile); one marked future is a one-line error."""
    profile = target if isinstance(target, Target) else load_target(target)
    profile.require_runnable()
    return profile


@dataclass(frozen=True)
class RuntimeChoice:
    """What to open a package with: ``Detector(pkg, backend=..., precision=..., threads=..., options=...)``."""

    backend: str  # an artifact format, or "auto"
    precision: str | None  # None: any
    threads: int | None  # None: the physical cores
    options: dict[str, Any]  # for open_backend: delegate, execution provider or OpenVINO device


def runtime_choice(manifest: Manifest, target: str | Target | None = None, backend: str = "auto",
                   precision: str | None = None, threads: int | None = None,
                   options: Mapping[str, Any] | None = None) -> RuntimeChoice:
    """Fill in what the caller left open (backend "auto", precision/threads None) from ``target``: its first
    backend the package has an artifact for, then its first precision that backend has, its threads and
    that backend's delegate / execution provider / device. ``options`` override the profile's."""
    given = dict(options or {})
    if target is None:
        return RuntimeChoice(backend, precision, threads, given)
    profile, artifacts = runnable_target(target), manifest.artifacts
    if backend == "auto":
        backend = next((b for b in profile.backends if any(a.format == b for a in artifacts)), "auto")
    if precision is None:
        precision = next((p for p in profile.precisions
                          if any(a.precision == p and backend in ("auto", a.format) for a in artifacts)), None)
    profile_options = profile.backend_options(backend) if backend != "auto" else {}
    return RuntimeChoice(backend, precision, threads or profile.threads, {**profile_options, **given})


def all_targets() -> list[Target]:
    """Every available profile, loaded (a broken one raises, naming its file)."""
    return [load_target(str(path)) for path in available_targets().values()]


def targets_table(targets: list[Target]) -> str:
    """Plain-text table of profiles for ``edge-runtime targets``."""
    rows = [[t.name, t.arch, t.cpu or "-", t.threads, ",".join(t.backends), ",".join(t.precisions),
             t.accelerator or "-", t.status] for t in targets]
    return format_table(["target", "arch", "cpu", "threads", "backends", "precisions", "delegate/EP/device",
                         "status"], rows)


# --- validation -------------------------------------------------------------------------------

def _string(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise EdgeRuntimeError(f"{path}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _text(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise EdgeRuntimeError(f"{path}: {key!r} must be a string, got {value!r}")
    return value


def _threads(path: Path, key: str, value: object) -> int:
    if value == "physical":
        return physical_cores()
    # bool is an int subclass: `threads = true` is a typo, not 1 thread
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise EdgeRuntimeError(f"{path}: {key!r} must be a positive integer or \"physical\", got {value!r}")


def _choices(allowed: tuple[str, ...]) -> Callable[[Path, str, object], str]:
    def check(path: Path, key: str, value: object) -> str:
        if value not in allowed:
            raise EdgeRuntimeError(f"{path}: {key!r} must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)
    return check


def _string_list(path: Path, key: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise EdgeRuntimeError(f"{path}: {key!r} must be a non-empty list of strings, got {value!r}")
    return tuple(value)


def _string_table(path: Path, key: str, value: object) -> dict[str, str]:
    # delegate and provider options reach C APIs that take strings: '2' rather than 2 keeps
    # what the user wrote and what the library receives the same
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise EdgeRuntimeError(f"{path}: {key!r} must be a table of string values, got {value!r}")
    return dict(value)


def _peaks(path: Path, key: str, value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        raise EdgeRuntimeError(f"{path}: {key!r} must be a table precision = GFLOP/s, got {value!r}")
    peaks: dict[str, float] = {}
    for precision, peak in value.items():
        if precision not in all_precisions():
            raise EdgeRuntimeError(f"{path}: {key!r} has unknown precision {precision!r} "
                                   f"(known: {', '.join(all_precisions())})")
        if isinstance(peak, bool) or not isinstance(peak, (int, float)) or peak <= 0:
            raise EdgeRuntimeError(f"{path}: {key}.{precision} must be a positive number, got {peak!r}")
        peaks[precision] = float(peak)
    return peaks


def _key_checker(key: TargetKey) -> Callable[[Path, str, object], Any]:
    return {"string": _string, "table": _string_table}.get(key.kind) or _choices(key.choices)


# key -> (checker, required); the order is the order of the "known keys" in error messages
_FIELDS: dict[str, tuple[Callable[[Path, str, object], Any], bool]] = {
    "name": (_string, True),
    "arch": (_string, True),
    "description": (_text, False),
    "threads": (_threads, False),
    "backends": (_string_list, True),
    "precisions": (_string_list, True),
    "cpu": (_text, False),
    **{name: (_key_checker(key), False) for name, (_, key) in target_keys().items()},
    "peak_gflops": (_peaks, False),
    "status": (_choices(STATUSES), False),
    "notes": (_text, False),
}


def _parse(path: Path, data: dict[str, Any]) -> Target:
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise EdgeRuntimeError(f"{path}: unknown key {', '.join(map(repr, unknown))} "
                               f"(known: {', '.join(_FIELDS)})")
    missing = [key for key, (_, required) in _FIELDS.items() if required and key not in data]
    if missing:
        raise EdgeRuntimeError(f"{path}: missing required key {', '.join(map(repr, missing))}")
    values = {key: check(path, key, data[key]) for key, (check, _) in _FIELDS.items() if key in data}
    values.setdefault("description", "")
    values.setdefault("threads", physical_cores())
    target = Target(**values)
    _check_consistency(path, target)
    return target


def _check_consistency(path: Path, t: Target) -> None:
    """Cross-field rules: a profile in a search dir is found by its file name, so its name must be
    that too; an accelerator setting needs its backend. A file given by path may be named freely."""
    if t.name != path.stem and path.resolve().parent in {d.resolve() for d in search_dirs()}:
        raise EdgeRuntimeError(f"{path}: name {t.name!r} must match the file name, or "
                               f"'--target {t.name}' would not find it (rename the file to {t.name}.toml)")
    # a documentation-only profile may name a backend this project does not have yet (rknn)
    bad = [b for b in t.backends if b not in formats()] if t.status != "future" else []
    if bad:
        raise EdgeRuntimeError(f"{path}: unknown backend {', '.join(map(repr, bad))} (known: {', '.join(formats())})")
    bad = [p for p in t.precisions if p not in all_precisions()]
    if bad:
        raise EdgeRuntimeError(f"{path}: unknown precision {', '.join(map(repr, bad))} "
                               f"(known: {', '.join(all_precisions())})")
    keys = target_keys()
    for name, (backend, _) in keys.items():
        if getattr(t, name) and backend not in t.backends:
            raise EdgeRuntimeError(f"{path}: {name!r} is set but {backend!r} is not in backends")
    for name, (_, key) in keys.items():
        if key.needs and getattr(t, name) and not getattr(t, key.needs):
            raise EdgeRuntimeError(f"{path}: {name!r} is set without {_article(key.needs)} {key.needs!r}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
