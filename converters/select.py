"""``edge-runtime select``: the most accurate detector that meets a frame rate on a device, on the user's photos.

Candidates are built-in models with weights at hand x input sizes x the target profile's backends and
precisions. Each (model, size) becomes a package (export, then ``convert`` for the target, every artifact
checked against FP32 as always); every verified artifact the target runs gets its COCO mAP on the user's
labelled photos (``validate``, through the runtime's own Detector) and its latency on the device: measured
here when this machine is the target (its architecture, and its accelerator when the profile names one),
on a remote device over ssh (``RemoteBench``: the ``bundle``/``deploy`` machinery, bench only, no model code
there), or estimated from the profile's peak and the graph's MACs when neither is possible, and then
marked "estimated" everywhere. The frame-rate budget is judged on the end-to-end time (preprocessing +
inference + decode), not the model alone.

Packages are cached under a key of everything that shapes them (weights, model, size, the target
profile's contents, calibration, this version); results under the artifact's checksum, the labels, the
device and how it was timed: a second run with one more model measures only that one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import edge_runtime
from edge_runtime.deploy.bundle import safe_name
from edge_runtime.deploy.targets import Target, expected_latency_ms, runnable_target
from edge_runtime.errors import EdgeRuntimeError, UsageError
from edge_runtime.evaluation.validate import EvaluationSet, validate_package
from edge_runtime.fsutil import atomic_write_text
from edge_runtime.manifest import load_manifest, sha256_file

# Share of a profile's peak assumed for the estimate when no device is reachable (docs/targets-and-pi.md
# has what was measured against it). An assumption, and said as one in every output.
ESTIMATE_PERCENT_OF_PEAK = 20.0
RESULTS_FILE = "results.json"
COMPLETE_MARK = ".select-complete"
WARMUP = 5
_RECORD_KEYS = {"artifact": str, "map": float, "map50": float, "model_ms": float, "e2e_ms": float}


@dataclass(frozen=True)
class Candidate:
    model: str
    imgsz: int
    format: str
    precision: str


@dataclass
class Measured:
    """One candidate's figures. ``latency`` is "measured" or "estimated"; ``device`` says where."""

    candidate: Candidate
    artifact: str
    map: float
    map50: float
    model_ms: float
    e2e_ms: float
    latency: str
    device: str
    package: str
    pareto: bool = False
    meets: bool = False

    @property
    def fps(self) -> float:
        return 1e3 / self.e2e_ms

    def to_dict(self) -> dict[str, Any]:
        record = {**asdict(self.candidate), **{k: v for k, v in asdict(self).items() if k != "candidate"}}
        record["fps"] = round(self.fps, 2)
        return record


@dataclass(frozen=True)
class Device:
    """Where latency comes from: ``kind`` "local", "ssh" or "estimated"; ``key`` names it in the cache."""

    kind: str
    key: str
    describe: str


def available_models(weights: dict[str, Path]) -> list[str]:
    """Every model whose official checkpoint is in the cache, then those given ``weights``."""
    from .official import OFFICIAL, cached_path

    cached = [w.model for w in OFFICIAL.values() if w.model and cached_path(w, w.files[0]).is_file()]
    return list(dict.fromkeys([*cached, *weights]))


def check_models(models: Sequence[str], weights: dict[str, Path]) -> None:
    """One usage line for an unknown model name or weights given for a model not tried."""
    from .models import MODELS

    if unknown := [m for m in models if m not in MODELS]:
        raise UsageError(f"unknown model {', '.join(unknown)} (known: {', '.join(MODELS)})")
    if stray := [m for m in weights if m not in models]:
        raise UsageError(f"weights given for {', '.join(stray)}, which is not among the models tried "
                         f"({', '.join(models)})")


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
    """ssh with ``host``; this machine when it is the target (its architecture and, when the profile names
    an accelerator, a profile ``targets --detect`` finds here); else an estimate."""
    from edge_runtime.deploy.hostinfo import cpu_summary, detect_host

    if host:
        return Device("ssh", f"ssh:{host}:{target.name}", f"{host} over ssh")
    cpu = cpu_summary()
    why = f"this machine is {cpu['arch']}, the target {target.arch}"
    if target.arch in ("any", cpu["arch"]):
        if not target.accelerator or target.name in detect_host().matching_targets:
            return Device("local", f"local:{cpu['cpu']}:{target.name}", f"this machine ({cpu['cpu']})")
        why = f"{target.accelerator} is not on this machine"
    return Device("estimated", f"estimated:{ESTIMATE_PERCENT_OF_PEAK:g}:{target.name}",
                  f"{target.name}, estimated at {ESTIMATE_PERCENT_OF_PEAK:g} % of its peak ({why}: --host "
                  f"measures on the device)")


def data_fingerprint(data: EvaluationSet) -> str:
    """The labels as evaluated (boxes, image sizes, class matching): a change in any of them is a new key."""
    blob = json.dumps(data.ground_truth, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def build_key(target: Target, calib: Path | None, calib_size: int) -> str:
    """What shapes a package beyond its model and weights: the profile's contents, the calibration images
    and this version of the converters."""
    blob = json.dumps({"target": asdict(target), "calib": str(calib.resolve()) if calib else None,
                       "calib_size": calib_size, "edge_runtime": edge_runtime.__version__}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def pareto_front(rows: Sequence[Measured]) -> list[Measured]:
    """The rows no other row beats on both mAP (higher) and end-to-end time (lower)."""
    return [r for r in rows if not any(o.map >= r.map and o.e2e_ms <= r.e2e_ms and
                                       (o.map > r.map or o.e2e_ms < r.e2e_ms) for o in rows)]


def pick(rows: Sequence[Measured], fps: float) -> tuple[Measured | None, Measured | None]:
    """(the most accurate row meeting ``fps`` end to end, ties to the faster; else None, and the closest:
    the fastest row)."""
    meeting = [r for r in rows if r.fps >= fps]
    if meeting:
        return max(meeting, key=lambda r: (r.map, r.fps)), None
    return None, max(rows, key=lambda r: r.fps, default=None)


class ResultCache:
    """``results.json`` in the cache folder: result key -> one complete measurement. A damaged or foreign file,
    or a malformed record, is a miss, never an error."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RESULTS_FILE
        self.records: dict[str, dict[str, Any]] = {}
        try:
            loaded = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            loaded = {}
        if isinstance(loaded, dict):
            self.records = {k: v for k, v in loaded.items() if _well_formed(v)}
        self.hits = 0

    def put(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = record
        atomic_write_text(self.path, json.dumps(self.records, indent=1) + "\n")


def _well_formed(record: Any) -> bool:
    return isinstance(record, dict) and all(
        isinstance(record.get(k), kind) or (kind is float and isinstance(record.get(k), int)
                                            and not isinstance(record.get(k), bool))
        for k, kind in _RECORD_KEYS.items())


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One select at a time per cache folder: two would overwrite each other's results and packages."""
    with open(cache / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise EdgeRuntimeError(f"{cache}: another edge-runtime select is using this cache (--cache DIR "
                                   f"picks another)") from None
        yield


def _build_package(folder: Path, key: str, model: str, weights: Path, imgsz: int, target: Target,
                   calib: Path | None, calib_size: int, progress: Callable[[str], None]) -> tuple[Path, list[str]]:
    """Export + convert for ``target`` into ``folder`` (reused when a run with the same ``key`` completed
    it), built beside it and moved in whole. Returns the folder and one line per refused artifact."""
    from . import Converter
    from .convert import NEEDS_PHOTOS, ArtifactRefused

    mark = folder / COMPLETE_MARK
    if mark.is_file() and mark.read_text().strip() == key:
        return folder, []
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    refused: list[str] = []
    try:
        Converter.export(model, stage, weights, imgsz=imgsz, force=True, progress=progress)
        precisions = [p for p in target.precisions if calib is not None or p not in NEEDS_PHOTOS] or ["fp32"]
        try:
            Converter(stage).to(target=target, precision=precisions, calib=calib, calib_size=calib_size,
                                progress=progress, measure_speed=False)  # bench times every candidate below
        except ArtifactRefused as exc:  # the others are in; a refused artifact is no candidate
            refused = exc.refused
        (stage / COMPLETE_MARK).write_text(key + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        stage.rename(folder)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return folder, refused


def _latency_local(package: Path, target: Target, iters: int) -> dict[str, tuple[float, float]]:
    """Artifact file -> (model median ms, end-to-end median ms), each artifact in its own process, with
    the target's threads and delegate / execution provider / device."""
    from edge_runtime.bench import bench_package

    report = bench_package(package, threads=target.threads, warmup=WARMUP, iters=iters, target=target)
    return latencies(report)


def latencies(bench_report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """An ``edge-runtime bench`` report -> artifact file -> (model median ms, end-to-end median ms)."""
    return {r["artifact"]: (r["latency_ms"]["median"], r["end_to_end_ms"]["median"]) for r in bench_report["results"]}


def _latency_estimated(package: Path, target: Target, host_overhead: dict[str, float]
                       ) -> dict[str, tuple[float, float]]:
    """Artifact file -> (model ms from its MACs at ``ESTIMATE_PERCENT_OF_PEAK`` of the profile's peak for its
    precision, + this machine's measured pre/post-processing time); none for a precision without a peak."""
    manifest = load_manifest(package)
    macs = manifest.artifact("onnx", "fp32").extra.get("macs")
    out = {}
    for art in manifest.artifacts:
        peak = (target.peak_gflops or {}).get(art.precision)
        if macs and peak and art.file in host_overhead:
            model_ms = expected_latency_ms(macs, peak, ESTIMATE_PERCENT_OF_PEAK)
            out[art.file] = (model_ms, model_ms + host_overhead[art.file])
    return out


class RemoteBench:
    """Latency on a device over ssh: the first package is bundled for the target and deployed (install.sh,
    then run.sh's bench); the next ones are copied beside it and benchmarked with that venv and the
    bundled profile. A package with a backend the installed venv lacks gets a fresh deploy."""

    def __init__(self, host: str, target_spec: str, port: int = 22, identity: Path | None = None,
                 ssh_options: Sequence[str] = (), remote_dir: str = "edge-runtime-select",
                 wheel_dir: Path | None = None, remote_python: str = "python3",
                 install_env: dict[str, str] | None = None, iters: int = 30,
                 progress: Callable[[str], None] = lambda msg: None) -> None:
        self.host, self.target_spec, self.port, self.identity = host, target_spec, port, identity
        self.ssh_options, self.remote_dir, self.wheel_dir = list(ssh_options), remote_dir, wheel_dir
        self.remote_python, self.install_env, self.iters, self.progress = remote_python, install_env, iters, progress
        self.installed: dict[str, Any] = {}
        self.formats: set[str] = set()

    def __call__(self, package: Path, target: Target) -> dict[str, tuple[float, float]]:
        from edge_runtime.deploy.bundle import artifacts_for_target, copy_package, make_bundle
        from edge_runtime.deploy.remote import bench_remote, deploy

        manifest = load_manifest(package)
        kept = artifacts_for_target(manifest, target)
        formats = {a.format for a in kept}
        if self.installed and formats <= self.formats:
            with tempfile.TemporaryDirectory(prefix="select-package-") as tmp:
                trimmed = Path(tmp) / package.name
                copy_package(manifest, kept, trimmed)  # only what the target runs: the venv has those backends
                bench = bench_remote(self.installed, trimmed, self.port, self.identity, self.ssh_options,
                                     self.iters, self.progress)
            return latencies(bench)
        with tempfile.TemporaryDirectory(prefix="select-bundle-") as tmp:
            bundle = make_bundle(package, self.target_spec, Path(tmp) / "bundle.tar.gz",
                                 self.wheel_dir, progress=self.progress)
            self.installed = deploy(bundle, self.host, self.port, self.identity, self.remote_dir, self.ssh_options,
                                    self.iters, self.remote_python, self.install_env, progress=self.progress)
        self.formats = formats
        if not self.installed.get("bench"):
            raise EdgeRuntimeError(f"{self.host}: the device's bench report could not be read")
        return latencies(self.installed["bench"])


def select_detector(data: Callable[[Sequence[str]], EvaluationSet], target: str | Target, fps: float,
                    models: Sequence[str], sizes: Sequence[int] | None = None,
                    weights: dict[str, Path] | None = None, calib: Path | None = None, calib_size: int = 32,
                    cache: Path | None = None, remote: RemoteBench | None = None, iters: int = 30,
                    max_minutes: float | None = None,
                    progress: Callable[[str], None] = lambda msg: None) -> dict[str, Any]:
    """Measure every candidate and choose. ``data(class_names)`` makes the labelled photos' EvaluationSet for
    a model's classes (a label set none of whose classes the model has is a one-line error, before any
    export). ``calib``: INT8 calibration images (None: no INT8 candidates, said in ``skipped``: calibrating on
    the evaluation photos would flatter INT8's mAP). ``remote``: measure on a device over ssh. Returns a
    JSON-ready report: ``rows`` (every candidate measured, with ``pareto`` and ``meets``), ``chosen`` (or
    None), ``closest`` (when none meets), ``skipped`` (one line each)."""
    from .models import get_spec
    from .official import cache_dir

    if fps <= 0 or iters < 1 or calib_size < 1 or (max_minutes is not None and max_minutes < 0):
        raise UsageError("--fps, --iters and --calib-size must be positive and --max-minutes at least 0")
    weights = weights or {}
    check_models(models, weights)
    for model in models:  # class matching fails here, before any export, when it fails at all
        if names := get_spec(model).class_names:
            data(names)
    started = time.monotonic()
    profile = runnable_target(target)
    cache = Path(cache) if cache is not None else cache_dir() / "select"
    (cache / "packages").mkdir(parents=True, exist_ok=True)
    device = choose_device(profile, remote.host if remote else None)
    skipped: list[str] = []
    if "int8" in profile.precisions and calib is None:
        skipped.append("int8: not built: pass --calib DIR (photos like the deployment's; calibrating on the "
                       "evaluation photos would flatter INT8's mAP)")
    if "bf16" in profile.precisions and calib is None:
        skipped.append("bf16: not built: pass --calib DIR (photos it is checked on against FP32)")
    key = build_key(profile, calib, calib_size)
    rows: list[Measured] = []
    plan = [(m, s) for m in models for s in (sizes or default_sizes(m))]
    with _locked(cache):
        results = ResultCache(cache)
        bar = _bar(len(plan))
        for done, (model, imgsz) in enumerate(plan):
            if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
                skipped += [f"{m}@{s}: not measured, --max-minutes {max_minutes:g} spent" for m, s in plan[done:]]
                break
            found = weights_for(model, imgsz, weights)
            if found is None:
                skipped.append(f"{model}@{imgsz}: no weights here (edge-runtime fetch, or --model-weights "
                               f"{model}=PATH)")
                bar.update(1)
                continue
            progress(f"[{done + 1}/{len(plan)}] {model}@{imgsz}")
            try:
                rows += _measure(model, imgsz, found, profile, key, calib, calib_size, cache, data, device, results,
                                 remote, iters, skipped, progress)
            except EdgeRuntimeError as exc:  # one pair failing (an export, a conversion, a device) skips it
                skipped.append(f"{model}@{imgsz}: {exc}")
                progress(skipped[-1])
            bar.update(1)
        bar.close()
    for row in pareto_front(rows):
        row.pareto = True
    for row in rows:
        row.meets = row.fps >= fps
    chosen, closest = pick(rows, fps)
    return {"target": profile.name, "fps_budget": fps, "device": device.describe, "latency": device.kind,
            "cache": str(cache), "cache_hits": results.hits, "rows": [r.to_dict() for r in rows],
            "chosen": chosen.to_dict() if chosen else None, "closest": closest.to_dict() if closest else None,
            "skipped": skipped, "minutes": round((time.monotonic() - started) / 60, 2)}


def _measure(model: str, imgsz: int, weights: Path, profile: Target, key: str, calib: Path | None,
             calib_size: int, cache: Path, data: Callable[[Sequence[str]], EvaluationSet], device: Device,
             results: ResultCache, remote: RemoteBench | None, iters: int, skipped: list[str],
             progress: Callable[[str], None]) -> list[Measured]:
    """One (model, size): its package, then mAP and latency of each artifact the target runs that the cache
    does not hold yet; a candidate without a latency is listed in ``skipped``, not cached."""
    from edge_runtime.deploy.bundle import artifacts_for_target

    name = f"{model}-{imgsz}-{safe_name(profile.name, 'target')}-{sha256_file(weights)[:12]}-{key}"
    package, refused = _build_package(cache / "packages" / name, key, model, weights, imgsz, profile, calib,
                                      calib_size, progress)
    skipped += [f"{model}@{imgsz}: {line}" for line in refused]
    manifest = load_manifest(package)
    evaluation = data(manifest.class_names)
    arts = artifacts_for_target(manifest, profile)
    # the artifact's checksum, the profile's contents (its threads, accelerator, peaks for an estimate), the
    # labels as evaluated, and where and how it was timed
    context = f"{key}|{data_fingerprint(evaluation)}|{device.key}|iters {iters}"
    keys = {a.file: f"{a.sha256[:16]}|{context}" for a in arts}
    cached = {a.file for a in arts if keys[a.file] in results.records}
    results.hits += len(cached)
    if len(cached) < len(arts):
        report = validate_package(package, evaluation, threads=profile.threads)
        accuracy = {r["artifact"]: r for r in report["artifacts"]}
        if device.kind == "local":
            latency = _latency_local(package, profile, iters)
        elif device.kind == "ssh":
            latency = remote(package, profile)
        else:
            overhead = {f: e2e - ms for f, (ms, e2e) in _latency_local(package, profile, iters).items()}
            latency = _latency_estimated(package, profile, overhead)
        for art in arts:
            if art.file not in latency or art.file in cached:
                continue
            results.put(keys[art.file], {"artifact": art.file, "map": accuracy[art.file]["map"],
                                         "map50": accuracy[art.file]["map50"], "model_ms": latency[art.file][0],
                                         "e2e_ms": latency[art.file][1]})
    rows = []
    for art in arts:
        record = results.records.get(keys[art.file])
        if record is None:
            why = "no peak for its precision in the profile" if device.kind == "estimated" else "its bench failed"
            skipped.append(f"{model}@{imgsz} {art.format} {art.precision}: no latency ({why})")
            continue
        rows.append(Measured(Candidate(model, imgsz, art.format, art.precision), art.file, record["map"],
                             record["map50"], record["model_ms"], record["e2e_ms"],
                             "estimated" if device.kind == "estimated" else "measured", device.describe, str(package)))
    return rows


def _bar(total: int) -> Any:
    """A progress bar over the (model, size) pairs on a terminal; silent otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc="select", unit="model x size", disable=not sys.stderr.isatty(), leave=False)


def write_choice(choice: dict[str, Any], out: Path, report: dict[str, Any]) -> Path:
    """The chosen candidate's package in ``out``: its one artifact (and its weights file), the manifest
    listing only it, and ``select.json`` (the whole report). Staged beside ``out`` and moved in whole."""
    from edge_runtime.deploy.bundle import copy_package
    from edge_runtime.fsutil import require_new_folder

    out = require_new_folder(out, hint="pick a new folder for the chosen package")
    manifest = load_manifest(choice["package"])
    art = next(a for a in manifest.artifacts if a.file == choice["artifact"])
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        copy_package(manifest, [art], stage / "package")
        atomic_write_text(stage / "package" / "select.json", json.dumps(report, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # require_new_folder let only an empty one through
        (stage / "package").rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def select_table(report: dict[str, Any]) -> str:
    from edge_runtime.timing import format_table

    rows = sorted(report["rows"], key=lambda r: r["e2e_ms"])
    mark = "*" if report["latency"] == "estimated" else ""
    table = format_table(
        ["model", "size", "format", "precision", "mAP", "AP50", "model ms", "e2e ms", "FPS e2e",
         "pareto", f">= {report['fps_budget']:g} FPS"],
        [[r["model"], r["imgsz"], r["format"], r["precision"], f"{r['map']:.4f}", f"{r['map50']:.4f}",
          f"{r['model_ms']:.2f}{mark}", f"{r['e2e_ms']:.2f}{mark}", f"{r['fps']:.1f}{mark}",
          "*" if r["pareto"] else "", "yes" if r["meets"] else "no"] for r in rows])
    lines = [f"target {report['target']}, latency {report['latency']} on {report['device']}", table]
    if mark:
        lines.append(f"{mark} estimated: MACs at {ESTIMATE_PERCENT_OF_PEAK:g} % of the profile's peak, + this "
                     f"machine's pre/post-processing time (a ranking guess, not a figure to quote)")
    return "\n".join(lines)


def pareto_plot(report: dict[str, Any], path: str | Path) -> Path:
    """mAP against end-to-end time, one colour per model, the Pareto front joined and labelled, the chosen
    candidate ringed, the budget as a line."""
    import cv2
    import numpy as np

    from edge_runtime.evaluation.plot import PALETTE, _text
    from edge_runtime.fsutil import atomic_write_image

    rows = report["rows"]
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
