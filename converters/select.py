"""``edge-runtime select``: the most accurate detector that meets a frame rate on a device, on the user's photos.

Candidates are built-in models with weights at hand x input sizes x the target profile's backends and
precisions. Each (model, size) becomes a package (export, then ``convert`` for the target, every artifact
checked against FP32 as always); every verified artifact gets its COCO mAP on the user's labelled photos
(``validate``, through the runtime's own Detector) and its latency on the device: measured here when this
machine is the target's architecture, on a remote device over ssh (``--host``, the ``bundle``/``deploy``
machinery: bench only, no model code there), or estimated from the profile's peak and the graph's MACs
when neither is possible, and then marked "estimated" everywhere. The frame-rate budget is judged on the
end-to-end time (preprocessing + inference + decode), not the model alone.

Results are cached by (weights, model, size, artifact, data, device): a second run with one more model
measures only that one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_runtime.deploy.targets import Target, runnable_target
from edge_runtime.errors import EdgeRuntimeError, UsageError
from edge_runtime.evaluation.validate import EvaluationSet, validate_package
from edge_runtime.fsutil import atomic_write_text
from edge_runtime.manifest import load_manifest, sha256_file

# What a lightweight detector reaches of a profile's peak, for the estimate when no device is reachable:
# NanoDet-Plus-m 416 FP32 ONNX reached 28 % of this 2-core Zen 4's peak (1.56 GFLOP in 14.5 ms against
# ~380 GFLOP/s); depthwise-heavy graphs on in-order ARM cores reach less. An assumption, said as such.
ESTIMATE_EFFICIENCY = 0.2
RESULTS_FILE = "results.json"
COMPLETE_MARK = ".select-complete"


@dataclass(frozen=True)
class Candidate:
    model: str
    imgsz: int
    format: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.model}@{self.imgsz} {self.format} {self.precision}"


@dataclass
class Measured:
    """One candidate's figures. ``latency`` is "measured" or "estimated"; ``device`` says where."""

    candidate: Candidate
    artifact: str
    map: float
    map50: float
    model_ms: float | None
    e2e_ms: float | None
    latency: str
    device: str
    package: str
    pareto: bool = False
    meets: bool = False

    @property
    def fps(self) -> float | None:
        return None if not self.e2e_ms else 1e3 / self.e2e_ms

    def to_dict(self) -> dict[str, Any]:
        record = {**asdict(self.candidate), **{k: v for k, v in asdict(self).items() if k != "candidate"}}
        record["fps"] = None if self.fps is None else round(self.fps, 2)
        return record


@dataclass(frozen=True)
class Device:
    """Where latency comes from: ``kind`` "local", "ssh" or "estimated"; ``key`` names it in the cache."""

    kind: str
    key: str
    describe: str


def default_sizes(model: str) -> list[int]:
    """The sizes the model's official checkpoints were trained at, else its export default."""
    from .models import get_spec
    from .official import OFFICIAL

    sizes = sorted({w.imgsz for w in OFFICIAL.values() if w.model == model and w.imgsz})
    return sizes or [get_spec(model).default_imgsz]


def weights_for(model: str, imgsz: int, given: dict[str, Path]) -> Path | None:
    """``given[model]``, else the official checkpoint for ``imgsz`` (or the model's default) when it is in
    the cache already; None when there is none (select downloads nothing)."""
    if model in given:
        return given[model]
    from .official import OFFICIAL, cached_path, resolve

    if not any(w.model == model for w in OFFICIAL.values()):
        return None
    entry = resolve("official", model, imgsz)
    path = cached_path(entry, entry.files[0])
    return path if path.is_file() else None


def choose_device(target: Target, host: str | None) -> Device:
    from edge_runtime.deploy.hostinfo import cpu_summary

    if host:
        return Device("ssh", f"ssh:{host}:{target.name}", f"{host} over ssh")
    cpu = cpu_summary()
    if target.arch in ("any", cpu["arch"]):
        return Device("local", f"local:{cpu['cpu']}:{target.name}", f"this machine ({cpu['cpu']})")
    return Device("estimated", f"estimated:{target.name}",
                  f"{target.name}, estimated at {ESTIMATE_EFFICIENCY:.0%} of its peak (this machine is "
                  f"{cpu['arch']}, the target {target.arch}: --host measures on the device)")


def data_fingerprint(data: EvaluationSet) -> str:
    """The labels as evaluated (boxes, image sizes, class matching): a change in any of them is a new key."""
    blob = json.dumps(data.ground_truth, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def pareto_front(rows: Sequence[Measured]) -> list[Measured]:
    """The rows no other row beats on both mAP (higher) and end-to-end time (lower)."""
    timed = [r for r in rows if r.e2e_ms]
    return [r for r in timed if not any(o.map >= r.map and o.e2e_ms <= r.e2e_ms and
                                        (o.map > r.map or o.e2e_ms < r.e2e_ms) for o in timed)]


def pick(rows: Sequence[Measured], fps: float) -> tuple[Measured | None, Measured | None]:
    """(the most accurate row meeting ``fps`` end to end, ties to the faster; else None, and the closest:
    the fastest row)."""
    meeting = [r for r in rows if r.fps is not None and r.fps >= fps]
    if meeting:
        return max(meeting, key=lambda r: (r.map, r.fps)), None
    timed = [r for r in rows if r.fps is not None]
    return None, max(timed, key=lambda r: r.fps, default=None)


class ResultCache:
    """``results.json`` in the cache folder: candidate key -> its figures, written atomically after each package."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RESULTS_FILE
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                self.records = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.records = {}  # a damaged cache is a miss, not an error
        self.hits = 0

    def get(self, key: str) -> dict[str, Any] | None:
        found = self.records.get(key)
        self.hits += found is not None
        return found

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = record
        atomic_write_text(self.path, json.dumps(self.records, indent=1) + "\n")


def _build_package(folder: Path, model: str, weights: Path, imgsz: int, target: Target, calib: Path | None,
                   calib_size: int, progress: Callable[[str], None]) -> Path:
    """Export + convert for ``target`` into ``folder`` (reused when a previous run completed it)."""
    from . import Converter
    from .convert import ArtifactRefused

    if (folder / COMPLETE_MARK).is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted build
    Converter.export(model, folder, weights, imgsz=imgsz, progress=progress)
    wants_int8 = "int8" in target.precisions
    try:
        Converter(folder).to(target=target, precision=None if (calib or not wants_int8) else
                             [p for p in target.precisions if p != "int8"] or ["fp32"],
                             calib=calib, calib_size=calib_size, progress=progress)
    except ArtifactRefused as exc:  # the others are in; a refused artifact is no candidate
        for line in exc.refused:
            progress(line)
    (folder / COMPLETE_MARK).write_text(json.dumps({"target": target.name, "calib": str(calib)}) + "\n")
    return folder


def _latency_local(package: Path, threads: int, iters: int) -> dict[str, tuple[float, float]]:
    """Artifact file -> (model median ms, end-to-end median ms), each artifact in its own process."""
    from edge_runtime.bench import bench_package

    report = bench_package(package, threads=threads, warmup=3, iters=iters)
    return {r["artifact"]: (r["latency_ms"]["median"], r["end_to_end_ms"]["median"]) for r in report["results"]}


def _latency_estimated(package: Path, target: Target, host_overhead: dict[str, float]
                       ) -> dict[str, tuple[float, float]]:
    """Artifact file -> (model ms from MACs over ``ESTIMATE_EFFICIENCY`` of the profile's peak for its
    precision, + this machine's measured pre/post-processing time); artifacts of a precision the profile
    has no peak for are left out."""
    manifest = load_manifest(package)
    macs = manifest.artifact("onnx", "fp32").extra.get("macs")
    out = {}
    for art in manifest.artifacts:
        peak = target.peak_gflops.get(art.precision) if target.peak_gflops else None
        if not macs or not peak:
            continue
        model_ms = 2.0 * macs / (peak * 1e9 * ESTIMATE_EFFICIENCY) * 1e3
        out[art.file] = (model_ms, model_ms + host_overhead.get(art.file, 0.0))
    return out


def _bar(total: int) -> Any:
    """A progress bar over the (model, size) packages on a terminal; silent otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc="select", unit="package", disable=not sys.stderr.isatty(), leave=False)


def select_detector(data: EvaluationSet | Callable[[Sequence[str]], EvaluationSet], target: str | Target,
                    fps: float, models: Sequence[str], sizes: Sequence[int] | None = None,
                    weights: dict[str, Path] | None = None, calib: Path | None = None, calib_size: int = 32,
                    cache: Path | None = None, host: str | None = None,
                    remote: Callable[[Path, Target], dict[str, tuple[float, float]]] | None = None,
                    iters: int = 30, max_minutes: float | None = None,
                    progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Measure every candidate and choose. ``data``: the labelled photos as an EvaluationSet, or a function
    of the model's class names that makes one. ``remote(package, target)`` measures latency on the device
    (``--host``). Returns a JSON-ready report: ``rows`` (every candidate measured, with ``pareto`` and
    ``meets``), ``chosen`` (or None), ``closest`` (when none meets), ``skipped`` (one line each)."""
    from .official import cache_dir

    started = time.monotonic()
    profile = runnable_target(target)
    cache = Path(cache) if cache is not None else cache_dir() / "select"
    cache.mkdir(parents=True, exist_ok=True)
    results = ResultCache(cache)
    device = choose_device(profile, host)
    if device.kind == "ssh" and remote is None:
        raise UsageError("select --host needs a way to reach the device (internal: remote measurer missing)")
    rows: list[Measured] = []
    skipped: list[str] = []
    plan = [(m, s) for m in models for s in (sizes or default_sizes(m))]
    if "int8" in profile.precisions and calib is None:
        skipped.append("int8: not built (no calibration images: --calib DIR)")
    bar = _bar(len(plan))
    for done, (model, imgsz) in enumerate(plan):
        bar.set_postfix_str(f"{model}@{imgsz}")
        bar.update(1)
        if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
            skipped += [f"{m}@{s}: not measured, --max-minutes {max_minutes:g} spent" for m, s in plan[done:]]
            progress(skipped[-1])
            break
        found = weights_for(model, imgsz, weights or {})
        if found is None:
            skipped.append(f"{model}@{imgsz}: no weights here (edge-runtime fetch, or --weights {model}=PATH)")
            progress(skipped[-1])
            continue
        progress(f"[{done + 1}/{len(plan)}] {model}@{imgsz}")
        weights_sha = sha256_file(found)[:12]
        package = _build_package(cache / "packages" / f"{model}-{imgsz}-{profile.name}-{weights_sha}", model, found,
                                 imgsz, profile, calib, calib_size, progress)
        manifest = load_manifest(package)
        evaluation = data if isinstance(data, EvaluationSet) else data(manifest.class_names)
        prefix = f"{weights_sha}|{model}|{imgsz}|{data_fingerprint(evaluation)}|{device.key}|{profile.threads}"
        arts = [a for a in manifest.artifacts if a.verified and a.format in profile.backends]
        missing = [a for a in arts if results.get(f"{prefix}|{a.key}") is None]
        if missing:
            accuracy = validate_package(package, evaluation, threads=profile.threads)
            maps = {r["artifact"]: (r["map"], r["map50"]) for r in accuracy["artifacts"]}
            if device.kind == "local":
                latency = _latency_local(package, profile.threads, iters)
            elif device.kind == "ssh":
                latency = remote(package, profile)
            else:
                overhead = {f: e2e - ms for f, (ms, e2e) in _latency_local(package, profile.threads, iters).items()}
                latency = _latency_estimated(package, profile, overhead)
            for art in missing:
                model_ms, e2e_ms = latency.get(art.file, (None, None))
                record = {"artifact": art.file, "map": maps[art.file][0], "map50": maps[art.file][1],
                          "model_ms": model_ms, "e2e_ms": e2e_ms}
                results.put(f"{prefix}|{art.key}", record)
        for art in arts:
            record = results.records[f"{prefix}|{art.key}"]
            rows.append(Measured(Candidate(model, imgsz, art.format, art.precision), record["artifact"],
                                 record["map"], record["map50"], record["model_ms"], record["e2e_ms"],
                                 "estimated" if device.kind == "estimated" else "measured", device.describe,
                                 str(package)))
    bar.close()
    for row in pareto_front(rows):
        row.pareto = True
    for row in rows:
        row.meets = row.fps is not None and row.fps >= fps
    chosen, closest = pick(rows, fps)
    return {"target": profile.name, "fps_budget": fps, "device": device.describe, "latency": device.kind,
            "cache": str(cache), "cache_hits": results.hits, "rows": [r.to_dict() for r in rows],
            "chosen": chosen.to_dict() if chosen else None, "closest": closest.to_dict() if closest else None,
            "skipped": skipped, "minutes": round((time.monotonic() - started) / 60, 2)}


def write_choice(choice: dict[str, Any], out: Path, report: dict[str, Any]) -> Path:
    """The chosen candidate's package in ``out``: its one artifact (and its weights file), the manifest
    listing only it, and ``select.json`` (the whole report). Staged beside ``out`` and moved in whole."""
    from edge_runtime.deploy.bundle import copy_package
    from edge_runtime.fsutil import require_new_folder

    out = require_new_folder(out, hint="pick a new folder for the chosen package")
    manifest = load_manifest(choice["package"])
    art = next(a for a in manifest.artifacts if a.file == choice["artifact"])
    stage = out.parent / f".{out.name}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    copy_package(manifest, [art], stage)
    atomic_write_text(stage / "select.json", json.dumps(report, indent=1) + "\n")
    if out.exists():
        out.rmdir()  # require_new_folder let only an empty one through
    stage.rename(out)
    return out


def select_table(report: dict[str, Any]) -> str:
    from edge_runtime.timing import format_table

    rows = sorted(report["rows"], key=lambda r: (r["e2e_ms"] is None, r["e2e_ms"] or 0))
    estimated = report["latency"] == "estimated"
    table = format_table(
        ["model", "size", "format", "precision", "mAP", "AP50", "model ms", "e2e ms", "FPS e2e",
         "pareto", f">= {report['fps_budget']:g} FPS"],
        [[r["model"], r["imgsz"], r["format"], r["precision"], f"{r['map']:.4f}", f"{r['map50']:.4f}",
          "-" if r["model_ms"] is None else f"{r['model_ms']:.2f}" + ("*" if estimated else ""),
          "-" if r["e2e_ms"] is None else f"{r['e2e_ms']:.2f}" + ("*" if estimated else ""),
          "-" if r["fps"] is None else f"{r['fps']:.1f}", "*" if r["pareto"] else "",
          "yes" if r["meets"] else "no"] for r in rows])
    lines = [f"target {report['target']}, latency {report['latency']} on {report['device']}", table]
    if estimated:
        lines.append("* estimated (MACs over the profile's peak, + this machine's pre/post-processing time)")
    return "\n".join(lines)


def pareto_plot(report: dict[str, Any], path: str | Path) -> Path:
    """mAP against end-to-end time, one colour per model, the Pareto front joined and labelled, the chosen
    candidate ringed, the budget as a line."""
    import cv2
    import numpy as np

    from edge_runtime.evaluation.plot import PALETTE, _text
    from edge_runtime.fsutil import atomic_write_image

    rows = [r for r in report["rows"] if r["e2e_ms"]]
    if not rows:
        raise EdgeRuntimeError("no candidate has a latency to plot")
    width, height, margin = 900, 560, 70
    img = np.full((height, width, 3), 255, np.uint8)
    budget_ms = 1e3 / report["fps_budget"]
    x_max = max(max(r["e2e_ms"] for r in rows), budget_ms) * 1.1
    y_max = max(max(r["map"] for r in rows) * 1.15, 0.05)
    to_px = lambda ms, m: (int(margin + (width - 2 * margin) * ms / x_max),  # noqa: E731
                           int(height - margin - (height - 2 * margin) * m / y_max))
    cv2.rectangle(img, (margin, margin), (width - margin, height - margin), (90, 90, 90), 1)
    bx = to_px(budget_ms, 0)[0]
    cv2.line(img, (bx, margin), (bx, height - margin), (0, 0, 200), 1)
    _text(img, f"{report['fps_budget']:g} FPS", (bx + 4, margin + 14), color=(0, 0, 200))
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["e2e_ms"])
    for a, b in zip(front, front[1:]):
        cv2.line(img, to_px(a["e2e_ms"], a["map"]), to_px(b["e2e_ms"], b["map"]), (150, 150, 150), 1, cv2.LINE_AA)
    models = sorted({r["model"] for r in rows})
    chosen = report["chosen"]
    for r in rows:
        colour = PALETTE[models.index(r["model"]) % len(PALETTE)]
        centre = to_px(r["e2e_ms"], r["map"])
        cv2.circle(img, centre, 6 if r["pareto"] else 4, colour, -1 if r["pareto"] else 1, cv2.LINE_AA)
        if r["pareto"]:  # the others crowd the plot; the table and JSON have them
            _text(img, f"{r['imgsz']} {r['format']} {r['precision']}", (centre[0] + 8, centre[1] - 6), 0.35)
        if chosen and (r["package"], r["artifact"]) == (chosen["package"], chosen["artifact"]):
            cv2.circle(img, centre, 11, (0, 0, 200), 2, cv2.LINE_AA)
    for i, name in enumerate(models):
        cv2.circle(img, (margin + 10, margin + 20 + 18 * i), 5, PALETTE[i % len(PALETTE)], -1)
        _text(img, name, (margin + 20, margin + 25 + 18 * i))
    _text(img, f"mAP vs end-to-end latency on {report['target']} ({report['latency']})", (margin, margin - 20), 0.55)
    _text(img, "end-to-end ms", (width // 2 - 50, height - margin + 40))
    _text(img, "mAP", (10, height // 2))
    for i in range(6):
        _text(img, f"{x_max * i / 5:.0f}", (to_px(x_max * i / 5, 0)[0] - 8, height - margin + 18), 0.35)
        _text(img, f"{y_max * i / 5:.2f}", (margin - 40, to_px(0, y_max * i / 5)[1] + 4), 0.35)
    return atomic_write_image(path, img)

