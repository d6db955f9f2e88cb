"""Backend registry: artifact format -> backend class. The only list of formats.

Adding a backend is one new module (a ``Backend`` subclass declaring its format, precisions,
libraries, option and target keys; see base.py) plus one entry in ``BACKENDS``. Targets, manifest
checks, host detection, the layer profiler and the host converters read what they need from here.
The backend modules import their library only when an artifact is loaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailableError, EdgeRuntimeError
from ..versions import package_version
from .base import AcceleratorPackage, Backend, DeviceListing, LayerTime, LayerTimings, TargetKey, TensorSpec
from .litert import LiteRtBackend
from .ncnn import NcnnBackend
from .onnxruntime import OrtBackend
from .openvino import OpenVinoBackend

if TYPE_CHECKING:
    from ..manifest import Artifact, Manifest

BACKENDS: dict[str, type[Backend]] = {cls.format: cls for cls in (OrtBackend, OpenVinoBackend, LiteRtBackend,
                                                                          NcnnBackend)}


def formats() -> tuple[str, ...]:
    """Every artifact format a backend is registered for, in registry order."""
    return tuple(BACKENDS)


def precisions(fmt: str) -> tuple[str, ...]:
    """The precisions the ``fmt`` backend runs."""
    try:
        return BACKENDS[fmt].precisions
    except KeyError:
        raise EdgeRuntimeError(f"unknown artifact format {fmt!r} (known: {', '.join(BACKENDS)})") from None


def default_precisions() -> tuple[str, ...]:
    """The precisions made when none are named: every one some backend runs but no backend's opt-in ones."""
    opt_in = {p for cls in BACKENDS.values() for p in cls.opt_in_precisions}
    return tuple(p for p in all_precisions() if p not in opt_in)


def all_precisions() -> tuple[str, ...]:
    """Every precision some backend runs, in first-declared order."""
    return tuple(dict.fromkeys(p for cls in BACKENDS.values() for p in cls.precisions))


ALL_PRECISIONS = all_precisions()


def option_keys() -> frozenset[str]:
    """Every key some backend reads from its options, and the target keys that become options."""
    keys = set()
    for cls in BACKENDS.values():
        keys |= cls.option_keys | {k.name for k in cls.target_keys if k.option}
    return frozenset(keys)


def target_keys() -> dict[str, tuple[str, TargetKey]]:
    """Target-profile key -> (format, its declaration), in registry order."""
    return {key.name: (fmt, key) for fmt, cls in BACKENDS.items() for key in cls.target_keys}


def profiled_formats() -> tuple[str, ...]:
    """The formats whose backend has a per-layer profiler."""
    return tuple(fmt for fmt, cls in BACKENDS.items() if cls.has_layer_profiler())


def import_formats() -> dict[str, str]:
    """Suffix of a foreign model file (``edge-runtime import``) -> the format that loads it."""
    return {cls.import_file[0]: fmt for fmt, cls in BACKENDS.items() if cls.import_file}


def installed_library(fmt: str) -> str | None:
    """'name version' of the first installed library that runs ``fmt`` artifacts, else None."""
    for module, dist in BACKENDS[fmt].libraries:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken install counts as missing
            found = False
        if found:
            return f"{dist} {ver}" if (ver := package_version(dist)) else dist
    return None


def installed_backends() -> dict[str, str]:
    return {fmt: lib for fmt in BACKENDS if (lib := installed_library(fmt))}


def require_installed(path: Path, format: str) -> type[Backend]:
    """The backend class for ``format``; a clear error when there is none or its library is missing."""
    cls = BACKENDS.get(format)
    if cls is None:
        raise BackendUnavailableError(f"{path}: no backend for artifact format {format!r} "
                                      f"(known: {', '.join(BACKENDS)})")
    if installed_library(format) is None:
        have = ", ".join(f"{f} ({lib})" for f, lib in installed_backends().items()) or "none"
        needs = " or ".join(dist for _, dist in cls.libraries)
        raise BackendUnavailableError(f"{path}: a {format} artifact needs {needs}, not installed here "
                                      f"(installed backends: {have}); pip install 'edge-runtime[{cls.extra}]'")
    return cls


def open_backend(path: Path, format: str, threads: int, options: dict[str, Any] | None = None) -> Backend:
    """Load ``path`` with the backend registered for ``format``; a clear error when it is not installed."""
    return require_installed(path, format)(path, threads, options)


def open_artifact(manifest: Manifest, art: Artifact, threads: int, options: dict[str, Any] | None = None,
                  verify: bool = True) -> Backend:
    """Load a package's artifact (its checksum checked unless ``verify`` is False) with ``options`` over
    the settings its manifest entry records as verified (``Backend.recorded_options``: OpenVINO's
    inference precision); the caller's options win."""
    path = manifest.artifact_path(art, verify)
    cls = require_installed(path, art.format)
    return cls(path, threads, {**cls.recorded_options(art.extra), **(options or {})})


__all__ = ["ALL_PRECISIONS", "BACKENDS", "AcceleratorPackage", "Backend", "DeviceListing", "LayerTime",
           "LayerTimings", "TargetKey", "TensorSpec", "all_precisions", "default_precisions", "formats",
           "import_formats", "installed_backends", "installed_library", "open_artifact", "open_backend", "option_keys",
           "precisions", "profiled_formats", "require_installed", "target_keys"]
