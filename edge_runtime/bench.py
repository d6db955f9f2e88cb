"""Latency of every artifact in a package, FP32 ONNX as the baseline, each artifact in a fresh
process (two runtimes' thread pools in one process distort each other's timings). A worker that
crashes (a native runtime aborting or segfaulting) costs its artifact only: one line says so and the
others are still measured."""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .budget import DropBudget, budget_for, recorded_accuracy
from .compare import compare
from .deploy.hostinfo import cpu_summary
from .deploy.targets import Target, efficiency
from .errors import EdgeRuntimeError
from .hostfit import host_mismatch
from .io.sources import read_image
from .manifest import load_manifest
from .timing import format_table, summarize, time_calls


def bench_artifact(package: str, fmt: str, precision: str, threads: int | None, warmup: int, iters: int,
                   frame: np.ndarray, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One artifact: load time, model-only latency on the preprocessed frame, end-to-end latency,
    and the raw outputs on that frame (for the agreement column)."""
    from .detector import Detector

    t0 = time.perf_counter()
    det = Detector(package, backend=fmt, precision=precision, threads=threads, options=options)
    load_ms = (time.perf_counter() - t0) * 1e3
    tensor = det.family.preprocess(frame)[0].copy()
    outputs = [o.copy() for o in det.infer(tensor)]
    model = summarize(time_calls(lambda: det.infer(tensor), warmup, iters))
    e2e = summarize(time_calls(lambda: det(frame), 2, max(5, iters // 5)))
    art = det.artifact
    return {"artifact": art.file, "format": art.format, "precision": art.precision, "backend": det.backend.describe(),
            "size_mb": det.manifest.artifact_mb(art), "load_ms": load_ms,
            "latency_ms": model, "fps": 1e3 / model["median"], "end_to_end_ms": e2e, "threads": det.threads,
            "outputs": outputs}


class WorkerCrashedError(EdgeRuntimeError):
    """A worker process died without an answer (killed by a signal, or exited)."""


def _worker_main(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        reply: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 (handed to the parent, which raises it there)
        reply = ("error", exc)
    try:
        conn.send(reply)
    except Exception as exc:  # noqa: BLE001 (an exception or result that does not pickle)
        conn.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    conn.close()


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a fresh (spawned) process: its result, or its exception raised here. A worker that
    dies without answering raises ``WorkerCrashedError`` naming the signal: the parent holds no copy of
    the pipe's sending end, so the worker's death is an end of file at once (``multiprocessing.Pool``
    waits forever for a task whose worker crashed)."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker_main, args=(sender, fn, args), daemon=True)
    proc.start()
    sender.close()
    try:
        status, value = receiver.recv()
    except EOFError:
        proc.join()
        raise WorkerCrashedError(f"the worker process {_exit_description(proc.exitcode)} without a result") from None
    finally:
        receiver.close()
        proc.join()
    if status == "error":
        raise value
    return value


def bench_package(package: str | Path, threads: int | None = None, warmup: int = 5, iters: int = 50,
                  image: str | Path | None = None, isolate: bool = True, options: dict[str, Any] | None = None,
                  progress: Callable[[str], None] = lambda msg: None, target: Target | None = None,
                  worker: Callable[..., dict[str, Any]] = bench_artifact,
                  max_drop: str | DropBudget | None = None) -> dict[str, Any]:
    """Benchmark each artifact of ``package``; ``isolate`` runs each in its own process, and an artifact
    whose process crashes is listed under ``failed`` (one line each) while the others are measured.
    ``target`` adds its delegate / execution provider / device to each backend's options. ``worker``
    measures one artifact (``bench_artifact``'s arguments; tests pass one that crashes). ``max_drop``: the
    accuracy budget (as ``--backend auto`` takes it) that names ``fastest_within_budget``, auto's rule on
    this run's timings."""
    manifest = load_manifest(package)
    budget = budget_for(manifest, max_drop)
    frame = read_image(Path(image)) if image else synthetic_image(manifest.input.size_hw)
    rows, failed = [], []
    options_of: dict[str, dict[str, Any]] = {}
    for art in manifest.artifacts:
        progress(f"benchmarking {art.file} ({art.format} {art.precision})")
        art_options = options_of[art.key] = {**(target.backend_options(art.format) if target else {}),
                                             **(options or {})}
        args = (str(package), art.format, art.precision, threads, warmup, iters, frame, art_options)
        try:
            rows.append(run_isolated(worker, *args) if isolate else worker(*args))
        except WorkerCrashedError as exc:
            failed.append({"artifact": art.file, "format": art.format, "precision": art.precision,
                           "error": f"{Path(package) / art.file} ({art.format} {art.precision}): {exc}"})
            progress(f"{art.file}: the worker crashed ({exc}); going on with the other artifacts")
    if not rows:
        raise WorkerCrashedError(failed[0]["error"] if len(failed) == 1
                                 else f"{package}: every artifact's benchmark worker crashed ({failed[0]['error']})")
    base = next((r for r in rows if (r["format"], r["precision"]) == ("onnx", "fp32")), rows[0])
    by_key = {a.key: a for a in manifest.artifacts}
    own_fp32 = {r["format"]: r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        r["speedup_vs_baseline"] = base["latency_ms"]["median"] / r["latency_ms"]["median"]
        r["cosine_vs_baseline"] = compare(base["outputs"], r["outputs"])["cosine"]
        # INT8/FP16 against the same backend's FP32, timed in this run: the speed a precision buys
        fp32 = own_fp32.get(r["format"])
        r["speedup_vs_own_fp32"] = fp32["latency_ms"]["median"] / r["latency_ms"]["median"] if fp32 else None
        art = by_key[f"{r['format']}-{r['precision']}"]
        r["verified"], r["verification"] = art.verified, art.verdict.describe()
        r["recorded_accuracy"] = recorded_accuracy(art.extra)
        judged = budget.judge(art)
        r["within_budget"], r["recorded_drop"] = judged.within, judged.drop
        r["not_on_this_cpu"] = host_mismatch(art, options=options_of[art.key])
    # the fastest is named among verified artifacts whose record holds here: a fast wrong one is no answer
    fastest = min((r for r in rows if r["verified"] and not r["not_on_this_cpu"]),
                  key=lambda r: r["latency_ms"]["median"], default=None)
    within = min((r for r in rows if r["verified"] and not r["not_on_this_cpu"] and r["within_budget"]),
                 key=lambda r: r["latency_ms"]["median"], default=None)
    for r in rows:
        del r["outputs"]
    macs = next((a.extra.get("macs") for a in manifest.artifacts if a.format == "onnx" and a.precision == "fp32"), None)
    return {"package": str(manifest.root), "model": manifest.name, "input": list(manifest.input.shape),
            "threads": rows[0]["threads"], "warmup": warmup, "iters": iters, "isolated": isolate,
            "host": cpu_summary(), "baseline": base["artifact"], "macs": macs, "results": rows, "failed": failed,
            "fastest_verified": fastest["artifact"] if fastest else None, "budget": str(budget),
            "budget_source": budget.source, "fastest_within_budget": within["artifact"] if within else None}


def _ratio_cell(row: dict[str, Any]) -> str:
    ratio = row["speedup_vs_own_fp32"]
    return "-" if row["precision"] == "fp32" or ratio is None else f"{ratio:.2f}x"


def _accuracy_cell(found: dict[str, float]) -> str:
    parts = [f"cos {found['cosine_mean']:.4f}"] if "cosine_mean" in found else []
    parts += [f"mAP {-found['map_drop_points']:+.2f} pt"] if "map_drop_points" in found else []  # -: a drop
    return ", ".join(parts) or "-"


def roofline(report: dict[str, Any], target: Target) -> list[str]:
    """Per artifact: the arithmetic rate it reached against the target profile's peak for its precision
    (2 FLOPs per MAC). A low percentage on a board says memory or overheads, not arithmetic, set the speed."""
    if not report.get("macs"):
        return ["roofline: the package records no MAC count (exported before it was recorded: export again)"]
    lines = []
    for r in report["results"]:
        peak = target.peak_gflops.get(r["precision"])
        rate = 2 * report["macs"] / (r["latency_ms"]["median"] * 1e6)
        if peak:
            lines.append(f"roofline {r['artifact']}: {report['macs'] / 1e9:.3f} GMACs in "
                         f"{r['latency_ms']['median']:.2f} ms = {rate:.1f} GFLOP/s, "
                         f"{efficiency(report['macs'], r['latency_ms']['median'], peak):.1f} % of {target.name}'s "
                         f"{peak:g} GFLOP/s {r['precision']} peak")
        else:
            lines.append(f"roofline {r['artifact']}: {rate:.1f} GFLOP/s ({target.name} gives no {r['precision']} peak)")
    return lines


def synthetic_image(size_hw: tuple[int, int]) -> np.ndarray:
    """A deterministic textured image, so that no file is needed to benchmark."""
    h, w = size_hw
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w * 2, h * 2))
    return cv2.GaussianBlur(img, (5, 5), 0)


def bench_table(report: dict[str, Any]) -> str:
    host = report["host"]
    head = (f"{report['model']} input {report['input']}  |  {host['cpu']} ({host['arch']}, "
            f"{host['physical_cores']} cores, {' '.join(host['flags']) or 'no SIMD flags read'})  |  "
            f"{report['threads']} threads, {report['iters']} runs after {report['warmup']} warm-up"
            f"{', one process per artifact' if report['isolated'] else ''}")
    rows = [[r["artifact"], r["format"], r["precision"], r["size_mb"], r["latency_ms"]["median"],
             r["latency_ms"]["p90"], r["fps"], r["end_to_end_ms"]["median"], f"{r['speedup_vs_baseline']:.2f}x",
             _ratio_cell(r), f"{r['cosine_vs_baseline']:.4f}", _accuracy_cell(r["recorded_accuracy"]),
             "yes" if r["verified"] else "FAILED", r["backend"]]
            for r in report["results"]]
    table = format_table(["artifact", "format", "precision", "MB", "median ms", "p90 ms", "FPS", "e2e ms",
                          f"speed vs {report['baseline']}", "vs its FP32", "cosine", "recorded vs FP32",
                          "verified", "ran on"], rows)
    slower = [f"{r['artifact']} ({r['speedup_vs_own_fp32']:.2f}x)" for r in report["results"]
              if r["precision"] != "fp32" and r["speedup_vs_own_fp32"] is not None and r["speedup_vs_own_fp32"] < 1]
    failed = [f"{r['artifact']}: {r['verification']}" for r in report["results"] if not r["verified"]]
    holds = any(r["verified"] for r in report["results"])
    fastest = (f"fastest verified: {report['fastest_verified']}" if report["fastest_verified"]
               else "fastest verified: none (" + ("no verified artifact's record holds on this CPU)" if holds
                                                 else "no artifact passed its check against FP32)"))
    over = [f"{r['artifact']} ({r['recorded_drop']})" for r in report["results"] if r["verified"] and
            not r["within_budget"]]
    auto = (f"auto's choice within the accuracy budget {report['budget']} ({report['budget_source']}): "
            f"{report['fastest_within_budget'] or 'none'}" + (f"; over budget: {', '.join(over)}" if over else ""))
    unfit = [f"{r['artifact']}: {r['not_on_this_cpu']}" for r in report["results"] if r.get("not_on_this_cpu")]
    return "\n".join([head, table, fastest, auto] + [f"not chosen, failed its check: {line}" for line in failed]
                     + [f"not chosen, its record does not hold on this CPU: {line}" for line in unfit]
                     + ([f"slower than its own FP32 on this CPU: {', '.join(slower)}"] if slower else []))
