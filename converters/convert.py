"""Add artifacts (formats x precisions) to an existing package, each checked against FP32 ONNX.

A converter is a function ``ConvertJob -> ConvertResult`` registered in ``converters.formats.CONVERTERS``
under its format and precision. The orchestrator runs it into a staging folder inside the package, loads the
new file with the *runtime's* own backend and compares its outputs with the FP32 ONNX artifact;
only an artifact that passes ``edge_runtime.compare.judge`` is moved into the package (never
through a link) and listed.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

import edge_runtime
from edge_runtime.backends import open_artifact, open_backend
from edge_runtime.budget import DEFAULT_MAX_COSINE_DROP
from edge_runtime.compare import compare, judge
from edge_runtime.deploy.hostinfo import measured_on, physical_cores
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.evaluation.labels import load_class_map, read_labels
from edge_runtime.evaluation.validate import EvaluationSet
from edge_runtime.families import make_family
from edge_runtime.fsutil import refuse_link, replace_file
from edge_runtime.manifest import Artifact, Manifest, load_manifest, sha256_file
from edge_runtime.preprocess import to_layout
from edge_runtime.speed import REPEATS, time_in_fresh_process

from .accuracy import AccuracyBudget, CosineAgreement, MapMetric, Runner
from .calibration import CalibrationSet
from .convert_job import ConvertJob, host_is_target
from .formats import CONVERTERS, REFERENCE, check_formats, check_precisions, skip_reason

log = logging.getLogger(__name__)
# the default INT8 budget (mean cosine >= 1 - DEFAULT_MAX_COSINE_DROP) needs at least this many held-out images
MIN_HELD_OUT = 8
# precisions whose check (and INT8's calibration) needs photos, --calib: made only when photos are given
PHOTOS_NEEDED = {"int8": "INT8 needs calibration images: pass --calib FOLDER|VIDEO|COCO_JSON",
                 # lossy like INT8: a random input would say little
                 "bf16": "bf16 is checked against FP32 on photos: pass --calib FOLDER|VIDEO|COCO_JSON (up to "
                         "--val-size of its photos, those INT8 does not calibrate on)"}
NEEDS_PHOTOS = tuple(PHOTOS_NEEDED)


@contextmanager
def _missing_library_is_one_line(fmt: str, precision: str) -> Iterator[None]:
    """A third-party library a converter needs (nncf, openvino, tensorflow, ...) missing -> one error line;
    an ImportError inside this project is a bug and propagates as it is."""
    try:
        yield
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in ("converters", "edge_runtime", ""):
            raise
        raise EdgeRuntimeError(f"converting to {fmt} {precision} needs {exc.name}, not installed: "
                               f"pip install 'edge-runtime[convert]'") from None


class ArtifactRefused(EdgeRuntimeError):
    """Some converted artifacts failed their check against FP32 and were not listed; the others were.
    ``manifest`` is the package as written, ``refused`` one line per refused artifact."""

    def __init__(self, manifest: Manifest, refused: list[str]) -> None:
        super().__init__("; ".join(refused))
        self.manifest = manifest
        self.refused = refused


def verify_artifact(manifest: Manifest, art: Artifact, samples: list[np.ndarray],
                    reference: list[list[np.ndarray]] | None = None) -> dict[str, float]:
    """``art`` against the FP32 ONNX artifact, run as the runtime runs it (with the settings its entry
    records, e.g. OpenVINO's inference precision): worst max abs diff, and per image the lowest cosine
    over the outputs: its worst (``cosine``) and mean (``cosine_mean``) over the samples; ``backend``: how
    it ran (the backend's ``describe()``).
    ``reference``: FP32's outputs on ``samples`` when the caller has them (one run for all artifacts)."""
    if reference is None:
        run = _fp32_runner(manifest)
        reference = [run(tensor) for tensor in samples]
    got = open_artifact(manifest, art, 2)
    spec = manifest.input_for(art)
    diffs, cosines = [], []
    for tensor, want in zip(samples, reference):
        have = got.run({spec.name: to_layout(tensor, spec.layout)})
        result = compare(want, [have[n] for n in art.outputs])
        diffs.append(result["max_abs_diff"])
        cosines.append(result["cosine"])
    return {"max_abs_diff": max(diffs), "cosine": min(cosines), "cosine_mean": float(np.mean(cosines)),
            "backend": got.describe()}


def _held_out(manifest: Manifest, calibration: CalibrationSet, val_images: str | Path | None, size: int,
              calibrating: bool = True) -> CalibrationSet | None:
    """Images to check lossy artifacts on: ``val_images``, else those of the calibration source INT8 did not
    calibrate on (all of them when no INT8 is made: bf16 calibrates nothing)."""
    source = Path(val_images) if val_images is not None else calibration.source
    exclude = calibration.used if calibrating and source.resolve() == calibration.source.resolve() else ()
    try:
        return CalibrationSet(source, manifest.input, size, exclude=exclude, desc="held-out images")
    except EdgeRuntimeError:
        if val_images is not None:
            raise
        return None


def _fp32_runner(manifest: Manifest) -> Runner:
    """The FP32 ONNX model as a ``Runner`` (outputs in its manifest order): the accuracy reference."""
    ref_art = manifest.artifact("onnx", "fp32")
    ref = open_backend(manifest.artifact_path(ref_art), "onnx", 2)
    return lambda t: [ref.run({manifest.input.name: t})[n] for n in ref_art.outputs]


def _map_metric(manifest: Manifest, reference: Runner, data: str | Path, images: str | Path | None, fmt: str,
                class_map: str | Path | None, progress: Callable[[str], None]) -> MapMetric:
    """mAP of the FP32 ONNX model's family decoder on labelled images: the --max-map-drop budget."""
    labelled = read_labels(data, images, fmt)
    evaluation = EvaluationSet.from_labels(labelled, manifest.class_names,
                                           load_class_map(class_map) if class_map else None)
    progress(evaluation.note)
    return MapMetric(reference, evaluation, make_family(manifest))


def _no_search(fmt: str, options: dict[str, Any]) -> str | None:
    """Why ``fmt``'s INT8 converter cannot search for a budget with these options (None: it can). Only the
    default budget steps aside; an explicit one is the converter's error."""
    if fmt == "tflite" and options.get("tflite_io") not in (None, "float32"):
        return f"full-integer TFLite ({options['tflite_io']} I/O) keeps no layer in float"
    return None


def _budget_record(budget: AccuracyBudget | None, int8_min_cosine: float | None, max_map_drop: float | None,
                   held_out: CalibrationSet | None, calibration: CalibrationSet, val_images: str | Path | None
                   ) -> dict[str, Any]:
    """The manifest's ``int8_budget``: ``max_drop`` as ``--max-drop`` reads it (None: no budget checked) and
    one line saying what was checked on, or why nothing was."""
    if budget is None:
        if int8_min_cosine == 0:
            return {"max_drop": "off", "set_by": "--int8-min-cosine 0", "note": "none (--int8-min-cosine 0)"}
        have = 0 if held_out is None else len(held_out)
        where = val_images if val_images is not None else f"{calibration.source} beyond the {len(calibration)} " \
                                                          f"calibration images"
        return {"max_drop": None, "set_by": None,
                "note": f"none checked: {have} held-out images in {where}, the default budget needs "
                        f"{MIN_HELD_OUT} (" + ("add images to it or raise --val-size" if val_images is not None else
                                             "add images, lower --calib-size or pass --val-images DIR") + ")"}
    if max_map_drop is not None:
        max_drop, set_by = f"map:{max_map_drop:g}", f"--max-map-drop {max_map_drop:g}"
    else:
        max_drop = f"cos:{budget.max_drop:.6g}"
        set_by = f"--int8-min-cosine {int8_min_cosine:g}" if int8_min_cosine else "default"
    images = len(budget.metric.images)
    return {"max_drop": max_drop, "set_by": set_by, "validation_images": images,
            "note": f"{max_drop} ({set_by}) on {images} held-out images"}


def record_speed(manifest: Manifest, made: set[str], tensor: np.ndarray, tensor_note: str, options: dict[str, Any],
                 measure: bool = True, progress: Callable[[str], None] = lambda msg: None) -> Manifest:
    """Record, as each artifact's ``speed``, how fast the verified FP16/INT8/bf16 artifacts of the formats
    this run ``made`` (``Artifact.key``s) run against their format's FP32 on this host, timed on ``tensor``
    (``tensor_note`` says what it is) in a fresh process (``edge_runtime.speed``). Only with ``measure`` and
    when this host is the CPU the package is for (``host_is_target``): a speed-up is a property of the CPU.
    A format whose FP32 was made again loses its older records first (they were against the FP32 replaced).
    A timing that fails costs the record, not the conversion (one warning)."""
    formats = {a.format for a in manifest.artifacts if a.key in made}
    remade = {a.format for a in manifest.artifacts if a.key in made and a.precision == "fp32"}
    changed = False
    for art in manifest.artifacts:
        if art.format in remade and art.key not in made and "speed" in art.extra:
            manifest = manifest.with_artifact(replace(art, extra={k: v for k, v in art.extra.items() if k != "speed"}))
            changed = True
    here, host = host_is_target(options)
    arts = {a.key: a for a in manifest.artifacts}
    keys = [a.key for a in manifest.artifacts if a.format in formats and a.precision != "fp32" and a.verified
            and (fp32 := arts.get(f"{a.format}-fp32")) is not None and fp32.verified]
    timed: dict[str, dict[str, float]] = {}
    if measure and here and keys:
        threads = physical_cores()
        progress(f"timing {', '.join(keys)} against their format's FP32 on {host}, {threads} threads, in a fresh "
                 f"process")
        try:
            timed = time_in_fresh_process(manifest.root, keys, tensor, threads)
        except Exception as exc:  # noqa: BLE001 (a runtime's own error types included: the record is optional)
            log.warning("%s: speed against FP32 not recorded: %s", manifest.root, str(exc).splitlines()[0])
        for key, speed in timed.items():
            record = {"vs_fp32": round(speed["vs_fp32"], 3), "ms": round(speed["ms"], 3),
                      "fp32_ms": round(speed["fp32_ms"], 3), "threads": threads, "measured_on": measured_on(),
                      "how": f"median model-only latency on {tensor_note}, timed after conversion in a fresh "
                             f"process, one session at a time, against the format's FP32 (median of the ratios of "
                             f"{REPEATS} repeats)"}
            manifest = manifest.with_artifact(replace(arts[key], extra={**arts[key].extra, "speed": record}))
    if changed or timed:
        manifest.save()
    return manifest


def convert_package(package: str | Path, formats: list[str], precisions: list[str],
                    calib: str | Path | None = None, calib_size: int = 100, options: dict[str, Any] | None = None,
                    progress: Callable[[str], None] = lambda msg: None, int8_min_cosine: float | None = None,
                    val_images: str | Path | None = None, val_size: int = 24, max_map_drop: float | None = None,
                    val_data: str | Path | None = None, val_format: str = "auto",
                    class_map: str | Path | None = None, keep_failed: bool = False,
                    measure_speed: bool = True) -> Manifest:
    """Convert the package's FP32 ONNX into every requested (format, precision) and update the manifest.

    INT8 needs ``calib`` (a folder of images, a video or a COCO json). Every new artifact is checked
    against FP32 ONNX on held-out images (``val_images``, else images of ``calib`` not used to
    calibrate; the calibration images themselves only when there are no others). INT8 is accuracy-aware:
    layers go back to float until the mean per-image cosine with FP32 on the held-out images reaches
    ``int8_min_cosine`` (None: 0.99 when there are at least ``MIN_HELD_OUT`` held-out images, else no
    budget; 0: no budget), or with ``max_map_drop`` (mAP points) until the COCO mAP on the labelled
    ``val_data`` / ``val_images`` is within that of FP32's. The budget applied (or why none was) is
    recorded in the manifest's ``int8_budget``, the default of ``--backend auto``'s. Returns the
    updated manifest.

    An artifact that fails its check (``edge_runtime.compare.judge``) is not listed and its file is
    not written into the package (``keep_failed``: written and listed with ``verification.passed``
    false, never chosen); the others still are, then ``ArtifactRefused`` names each refusal.

    ``measure_speed``: when this host is the package's CPU, time the lossy artifacts of the formats made here
    against their FP32 afterwards and record it (``record_speed``; a few seconds).
    """
    manifest = load_manifest(package)
    fp32 = manifest.artifact_path(manifest.artifact("onnx", "fp32"))
    check_formats(formats)
    check_precisions(precisions)
    for precision, why in PHOTOS_NEEDED.items():
        if precision in precisions and calib is None:
            raise EdgeRuntimeError(why)
    if int8_min_cosine is not None and not 0 <= int8_min_cosine <= 1:
        raise EdgeRuntimeError(f"--int8-min-cosine must be in [0, 1] (0: no budget), got {int8_min_cosine}")
    if max_map_drop is not None:
        if int8_min_cosine:
            raise EdgeRuntimeError("choose one INT8 budget: --max-map-drop or --int8-min-cosine")
        if max_map_drop < 0 or val_data is None:
            raise EdgeRuntimeError("--max-map-drop needs a drop >= 0 (mAP points) and labelled images: "
                                   "--val-data LABELS --val-images DIR")
    calibration = CalibrationSet(calib, manifest.input, calib_size) if calib is not None else None
    held_out = (_held_out(manifest, calibration, val_images, val_size, calibrating="int8" in precisions)
                if calibration is not None else None)
    agreement = budget = None
    default_budget = False
    needs_reference = "int8" in precisions and (held_out is not None or max_map_drop is not None)
    reference = _fp32_runner(manifest) if needs_reference else None
    if held_out is not None and reference is not None:
        agreement = CosineAgreement(reference, held_out.tensors)
    if int8_min_cosine and "int8" in precisions:
        if agreement is None:
            raise EdgeRuntimeError(f"--int8-min-cosine needs held-out images: {calib} has none beyond the "
                                   f"{len(calibration)} used to calibrate; pass --val-images DIR")
        budget = AccuracyBudget(agreement, max_drop=1.0 - int8_min_cosine)
    if max_map_drop is not None and "int8" in precisions:
        budget = AccuracyBudget(_map_metric(manifest, reference, val_data, val_images, val_format, class_map,
                                            progress), max_drop=max_map_drop / 100)
    if "int8" in precisions:
        default_budget = (budget is None and int8_min_cosine is None and held_out is not None
                          and len(held_out) >= MIN_HELD_OUT)
        if default_budget:
            budget = AccuracyBudget(agreement, max_drop=DEFAULT_MAX_COSINE_DROP)
        manifest = replace(manifest, int8_budget=_budget_record(budget, int8_min_cosine, max_map_drop, held_out,
                                                                calibration, val_images))
        progress(f"int8 budget: {manifest.int8_budget['note']}")
    check = held_out if held_out is not None else calibration
    if check is None:
        samples = [np.random.default_rng(0).standard_normal((1, 3, *manifest.input.size_hw)).astype(np.float32)]
        checked_on: dict[str, Any] = {"random_inputs": 1}
    else:
        samples = check.tensors if check is held_out else check.tensors[:: max(1, len(check) // 8)][:8]
        checked_on = {"held_out_images" if check is held_out else "calibration_images": len(samples),
                      "source": check.source.name}
    reference_outputs: list[list[np.ndarray]] | None = None  # FP32 on the samples, run once for every artifact
    refused: list[str] = []
    made: set[str] = set()  # artifacts written: their formats' lossy ones are timed against FP32 at the end
    for fmt in formats:
        for precision in precisions:
            if (fmt, precision) == REFERENCE:
                continue
            target = CONVERTERS[fmt].functions.get(precision)
            why = skip_reason(fmt, precision) if target is None else CONVERTERS[fmt].unavailable_here(precision)
            if why is not None:
                log.warning("skipping %s %s: %s", fmt, precision, why)
                continue
            module, func = target.split(":")
            with _missing_library_is_one_line(fmt, precision):
                convert = getattr(importlib.import_module(module), func)
            progress(f"{fmt} {precision}: converting")
            int8 = precision == "int8"
            with tempfile.TemporaryDirectory(prefix=".convert-", dir=manifest.root) as stage:
                staged = replace(manifest, root=Path(stage))
                job_budget = budget if int8 else None
                if job_budget is not None and default_budget and (reason := _no_search(fmt, options or {})):
                    progress(f"{fmt} int8: without the default budget: {reason}")
                    job_budget = None
                with _missing_library_is_one_line(fmt, precision):  # converters import their libraries on use
                    result = convert(ConvertJob(manifest, fp32, precision, calibration, dict(options or {}),
                                                progress, agreement if int8 else None, job_budget, Path(stage)))
                art = Artifact(file=result.file, format=fmt, precision=precision,
                               sha256=sha256_file(Path(stage) / result.file), outputs=tuple(result.outputs),
                               extra=result.extra)
                progress(f"{fmt} {precision}: checking against FP32 ONNX on {len(samples)} inputs")
                if reference_outputs is None:
                    run = reference or _fp32_runner(manifest)
                    reference_outputs = [run(tensor) for tensor in samples]
                checked = verify_artifact(staged.with_artifact(art), art, samples, reference_outputs)
                extra = {**art.extra, "fp32_agreement": {**checked, "checked_on": checked_on,
                                                          "measured_on": measured_on()}}
                if calibration is not None and int8:
                    extra.setdefault("calibration", calibration.describe())
                verdict = judge(precision, extra)
                art = replace(art, extra={**extra, "verification": verdict.to_dict()})
                progress(f"{fmt} {precision}: {result.file} cosine {checked['cosine']:.5f} "
                         f"max|diff| {checked['max_abs_diff']:.3g}")
                if not verdict.passed:
                    refused.append(f"{manifest.root}: {fmt} {precision} ({result.file}) refused: {verdict.describe()}"
                                   + (" (kept, marked failed: --keep-failed)" if keep_failed else ""))
                    if not keep_failed:
                        continue
                files = staged.artifact_files(art)
                for file in files:  # every target checked before any moves: an IR's .xml and .bin move together
                    refuse_link(manifest.root / file.name)
                for file in files:
                    replace_file(file, manifest.root / file.name)
            manifest = manifest.with_artifact(art)
            made.add(art.key)
            manifest.produced_by.setdefault("converters", {})[f"{fmt}-{precision}"] = edge_runtime.__version__
            manifest.save()
    if made:
        note = {"held_out_images": "a held-out image", "calibration_images": "a calibration image"}.get(
            next(iter(checked_on)), "a random input")
        manifest = record_speed(manifest, made, samples[0], note, options or {}, measure_speed, progress)
    if refused:
        raise ArtifactRefused(manifest, refused)
    return manifest
