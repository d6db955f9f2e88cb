"""``edge-runtime demo``: the bundled shapes detector, end to end, with no download and no fixtures.

Builds the ``demo-shapes`` package once (FP32 ONNX + INT8 ONNX, and OpenVINO / TFLite when their
tool chains are installed; calibration images from the generator), writes the generated clip,
runs the clip (or a camera) through every verified artifact for an FPS table, then writes an
annotated video with the fastest one (or shows it in a window for a camera). An artifact that failed
its check against FP32 is never timed or chosen; its refusal is reported. Building needs the host tool
chain (torch); a package already built in the output folder is reused without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge_runtime.detector import Detector
from edge_runtime.errors import BackendUnavailableError, EdgeRuntimeError
from edge_runtime.hostfit import host_mismatch
from edge_runtime.io.pipeline import RunSummary, run_pipeline
from edge_runtime.io.sources import open_source
from edge_runtime.manifest import Manifest, load_manifest, sha256_file
from edge_runtime.timing import format_table

from .formats import CONVERTERS, REFERENCE, check_formats

log = logging.getLogger(__name__)
MODEL = "demo-shapes"
CALIBRATION_IMAGES = 32
HELD_OUT_IMAGES = 16  # beside them, for convert's default INT8 budget (it needs 8 or more)


def buildable(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (format, precision) pairs whose converter's libraries are importable here (a pair is built only
    then; the FP32 ONNX reference comes from export)."""
    usable = []
    for fmt, precision in pairs:
        missing = [] if (fmt, precision) == REFERENCE else CONVERTERS[fmt].missing_libraries(precision)
        if missing:
            log.warning("skipping %s %s: %s not installed", fmt, precision, " and ".join(missing))
        else:
            usable.append((fmt, precision))
    return usable


def build_package(root: Path, formats: list[str], precisions: list[str],
                  progress: Callable[[str], None], refused: list[str] | None = None) -> Manifest:
    """The demo package under ``root/package``, exported/converted only where artifacts are missing;
    a conversion that fails its check is not listed and its line is appended to ``refused``."""
    package = root / "package"
    manifest = load_manifest(package) if (package / "manifest.json").is_file() else None
    missing = buildable([(f, p) for f in formats for p in precisions
                         if ((f, p) == REFERENCE or p in CONVERTERS[f].functions)
                         and (manifest is None or not any(a.format == f and a.precision == p
                                                          for a in manifest.artifacts))])
    if manifest is not None and not missing:
        return manifest
    try:
        from .convert import ArtifactRefused, convert_package
        from .demo_data import write_split
        from .export_onnx import export_package
        from .models import get_spec
    except ImportError as exc:
        raise EdgeRuntimeError(f"building the demo package needs the host tool chain ({exc.name} is missing): "
                               f"pip install 'edge-runtime[convert]'") from None
    bundled = get_spec(MODEL).weights
    if manifest is None or manifest.produced_by.get("source_sha256") != sha256_file(bundled):
        progress(f"exporting the bundled {MODEL} model to {package}")
        manifest = export_package(MODEL, None, package, progress=progress)
        missing = [(f, p) for f, p in missing if (f, p) != REFERENCE]
    if missing:
        calib = root / "calibration"
        if not (calib / "train").is_dir():
            write_split(calib, "train", CALIBRATION_IMAGES + HELD_OUT_IMAGES)
        for fmt in dict.fromkeys(f for f, _ in missing):
            try:
                manifest = convert_package(package, [fmt], [p for f, p in missing if f == fmt],
                                           calib=calib / "train", calib_size=CALIBRATION_IMAGES,
                                           val_size=HELD_OUT_IMAGES, progress=progress,
                                           measure_speed=False)  # the demo times every artifact it runs
            except ArtifactRefused as exc:
                manifest = exc.manifest
                if refused is not None:
                    refused.extend(exc.refused)
    return manifest


def demo_clip(root: Path) -> Path:
    clip = root / "shapes.avi"
    if not clip.is_file():
        from .demo_data import write_clip

        write_clip(clip)
    return clip


def _time_artifacts(manifest: Manifest, formats: list[str], precisions: list[str], source: str,
                    frames: int | None, threads: int | None, progress: Callable[[str], None]
                    ) -> list[tuple[str, str, RunSummary]]:
    runs = []
    for art in manifest.artifacts:
        if art.format not in formats or art.precision not in precisions:
            continue
        if not art.verified:
            log.warning("skipping %s %s: failed its check against FP32 (%s)", art.format, art.precision,
                        art.verdict.describe())
            continue
        if why := host_mismatch(art):  # a reused package converted on another kind of CPU
            log.warning("skipping %s %s: %s", art.format, art.precision, why)
            continue
        try:
            detector = Detector(manifest.root, backend=art.format, precision=art.precision, threads=threads)
        except BackendUnavailableError as exc:
            log.warning("skipping %s %s: %s", art.format, art.precision, exc)
            continue
        progress(f"running {detector.describe()}")
        runs.append((art.format, art.precision, run_pipeline(detector, open_source(source), max_frames=frames)))
    if not runs:
        raise EdgeRuntimeError(f"{manifest.root}: no verified artifact can run here (install a backend: "
                               f"pip install 'edge-runtime[onnx]')")
    return runs


def fps_table(runs: list[tuple[str, str, RunSummary]]) -> str:
    rows = [[fmt, precision, s.frames, s.stages.get("inference", {}).get("mean", float("nan")), s.fps,
             s.detections / max(s.frames, 1)] for fmt, precision, s in runs]
    return format_table(["backend", "precision", "frames", "inference ms", "FPS end to end", "detections/frame"],
                        rows)


def run_demo(out: str | Path, source: str | None, formats: list[str], precisions: list[str],
             frames: int | None, threads: int | None, show: bool,
             progress: Callable[[str], None] = lambda msg: None, refused: list[str] | None = None
             ) -> tuple[str, dict[str, str]]:
    """Build, time every verified artifact, write the annotated result with the fastest; returns (FPS
    table, outputs). Conversions refused by their check are appended to ``refused``.

    ``frames`` None: the whole clip or video file; 150 for a camera or stream (per timed artifact).
    """
    root = Path(out)
    check_formats(formats)
    manifest = build_package(root, formats, precisions, progress, refused)
    if source is None:
        source = str(demo_clip(root))
    elif frames is None and (source.isdigit() or "://" in source or source == "picam"):
        frames = 150
    runs = _time_artifacts(manifest, formats, precisions, source, frames, threads, progress)
    fmt, precision, _ = max(runs, key=lambda run: run[2].fps)
    progress(f"annotating with the fastest: {fmt} {precision}")
    detector = Detector(manifest.root, backend=fmt, precision=precision, threads=threads)
    summary = run_pipeline(detector, open_source(source), save_dir=root / "annotated", show=show,
                           max_frames=None if show else frames)
    return fps_table(runs), summary.outputs
