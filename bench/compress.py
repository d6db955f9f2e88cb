"""Pruning, fine-tuning and distillation of the bundled demo model, before / after, in one table.

    python bench/compress.py --out /tmp/compress-bench        # 16 min on 2 shared cores, one torch thread

Every variant starts from the bundled ``demo-shapes`` weights, is saved as a compressed checkpoint,
exported by ``export_package`` (ORT-vs-torch parity checked there) and measured: parameters, MACs
(``converters.macs`` on the exported ONNX), FP32 latency on ONNX Runtime and OpenVINO (one thread,
the ONNX file read by each runtime, at the model's 192x192 and at a larger input where the
arithmetic dominates the per-call overhead), COCO mAP of the package on 200 held-out generated
images, and the gzip size of the weights. Latency is measured in one process, all variants
interleaved round by round, and reported as the median of the per-round medians with its ratio to
the unpruned model measured in the same rounds (the machine is shared, so absolute numbers drift).

Three experiments:
  1. 30% of the channels pruned (l1, group, taylor), then fine-tuned with the task loss, and with
     the task loss + distillation from the unpruned model; plus unstructured 50% magnitude sparsity,
     which only shrinks the compressed file.
  2. a half-width student (the 50%-pruned shapes, random weights) trained from scratch for the same
     steps alone vs with the unpruned model as teacher.
  3. low-rank factorisation (SVD / Tucker-2 at half of each layer's MACs) of the layers ONNX Runtime
     measured faster, without and with the same fine-tuning.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from converters.checkpoints import load_model
from converters.compress.compressed_checkpoint import save_compressed
from converters.compress.data import load_training_data
from converters.compress.factorization import apply_factorization
from converters.compress.lowrank import plan_factorization
from converters.compress.prune import prune_channels, sparsify_magnitude, weight_bytes
from converters.compress.train import fine_tune
from converters.demo_model import evaluate_package
from converters.export_onnx import export_package
from converters.macs import count_macs
from converters.models import get_spec
from edge_runtime.backends.onnxruntime import OrtBackend
from edge_runtime.backends.openvino import OpenVinoBackend
from edge_runtime.timing import format_table

MODEL = "demo-shapes"


def export_variant(model: torch.nn.Module, name: str, folder: Path, num_classes: int,
                   history: list[dict[str, Any]], sizes: list[int],
                   factorized: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Save, export at each size, record params / MACs / weight bytes (export asserts nothing: parity here)."""
    ckpt = save_compressed(model, folder / "model.ckpt", MODEL, num_classes, factorized=factorized, history=history)
    row: dict[str, Any] = {"name": name, "params": sum(p.numel() for p in model.parameters()),
                           "gzip_bytes": weight_bytes(model)["gzip"], "packages": {}}
    for size in sizes:
        package = folder / str(size)
        manifest = export_package(MODEL, ckpt, package, imgsz=size)
        parity = manifest.artifacts[0].extra["parity_vs_torch"]
        assert parity["cosine"] > 0.9999, (name, size, parity)
        row["packages"][size] = package
        row[f"macs_{size}"] = count_macs(onnx.load(str(package / "model.onnx")))["macs"]
    return row


def measure_latency(rows: list[dict[str, Any]], sizes: list[int], rounds: int, calls: int) -> None:
    """Median ms per call of every (variant, backend, size), interleaved over ``rounds`` rounds."""
    runners = {}
    for row in rows:
        for size in sizes:
            path = row["packages"][size] / "model.onnx"
            x = {"input": np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)}
            for backend, cls in (("ort", OrtBackend), ("ov", OpenVinoBackend)):
                runner = cls(path, 1, {})
                for _ in range(3):
                    runner.run(x)
                runners[(row["name"], backend, size)] = (runner, x)
    per_round: dict[tuple, list[float]] = {key: [] for key in runners}
    for _ in range(rounds):
        for key, (runner, x) in runners.items():
            times = []
            for _ in range(calls):
                start = time.perf_counter()
                runner.run(x)
                times.append((time.perf_counter() - start) * 1e3)
            per_round[key].append(statistics.median(times))
    base = rows[0]["name"]
    for row in rows:
        for (name, backend, size), values in per_round.items():
            if name == row["name"]:
                # ratio per round against the baseline of the same round, then the median of the ratios
                ratios = [v / b for v, b in zip(values, per_round[(base, backend, size)])]
                row[f"{backend}_{size}_ms"] = statistics.median(values)
                row[f"{backend}_{size}_ratio"] = statistics.median(ratios)


def table(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    headers = ["variant", "params", *[f"MMACs@{s}" for s in sizes],
               *[f"{b} ms@{s} (x base)" for s in sizes for b in ("ORT", "OpenVINO")], "mAP", "AP50", "gzip KB"]
    lines = []
    for r in rows:
        lines.append([r["name"], f"{r['params']:,}", *[f"{r[f'macs_{s}'] / 1e6:.1f}" for s in sizes],
                      *[f"{r[f'{b}_{s}_ms']:.3f} ({r[f'{b}_{s}_ratio']:.2f})" for s in sizes for b in ("ort", "ov")],
                      f"{r['map']:.3f}", f"{r['map50']:.3f}", f"{r['gzip_bytes'] / 1024:.0f}"])
    return format_table(headers, lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for checkpoints and packages")
    ap.add_argument("--steps", type=int, default=200, help="fine-tuning steps of every fine-tuned variant [200]")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--images", type=int, default=2000, help="generated training images [2000]")
    ap.add_argument("--scratch-steps", type=int, default=500, help="training steps of the from-scratch students [500]")
    ap.add_argument("--large", type=int, default=416, help="the larger input size for latency [416]")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--eval", type=int, default=200, help="held-out images for mAP [200]")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = get_spec(MODEL)
    sizes = [spec.default_imgsz, args.large]
    teacher, num_classes = load_model(spec, spec.weights)
    data = load_training_data(MODEL, "demo", count=args.images, seed=1, workers=1)
    log: dict[str, Any] = {"args": vars(args), "fine_tune": {}}

    def tuned(model: torch.nn.Module, name: str, with_teacher: bool, steps: int, lr: float) -> torch.nn.Module:
        summary = fine_tune(model, MODEL, data, steps, lr, teacher=teacher if with_teacher else None, progress=False)
        log["fine_tune"][name] = summary
        print(f"{name}: {summary['loss']}, loss {summary['first_loss']:.2f} -> {summary['last_loss']:.2f} "
              f"in {summary['seconds']:.0f} s", flush=True)
        return model

    # (name, model, history, the variant whose latency it shares: fine-tuning keeps the pruned shapes)
    variants: list[tuple[str, torch.nn.Module, list[dict[str, Any]], str | None]] = [
        ("unpruned (bundled)", teacher, [], None)]
    sparse, report = sparsify_magnitude(teacher, 0.5)
    log["unstructured"] = report
    variants.append(("unstructured 50% (size only)", sparse, [{"step": "sparsify", "sparsity": 0.5}], None))
    # experiment 1: prune 30% of the bundled model's channels, then fine-tune
    for method in ("l1", "group", "taylor"):
        pruned, summary = prune_channels(teacher, MODEL, 0.3, method, data=data)
        history = [summary.history_entry()]
        if method == "l1":
            variants.append(("l1 30%, no fine-tune", pruned, history, None))
        for with_teacher in (False, True) if method == "l1" else (False,):
            name = f"{method} 30% + fine-tune" + (" + distill" if with_teacher else "")
            student = tuned(copy.deepcopy(pruned), name, with_teacher, args.steps, args.lr)
            variants.append((name, student, history, "l1 30%, no fine-tune"))
    # experiment 2: a half-width student (the 50%-pruned architecture) trained from scratch, alone or
    # taught by the bundled model; from scratch, as the demo model itself is trained (lr 1e-2, objectness
    # bias -4.5). A 50%-pruned student starting from the teacher's own weights gained nothing from it
    # (mAP 0.491 alone and taught, 200 steps on 300 images): the task loss alone recovers it as fast.
    half, summary = prune_channels(teacher, MODEL, 0.5, "l1")
    variants.append(("l1 50%, no fine-tune", half, [summary.history_entry()], None))
    for with_teacher in (False, True):
        torch.manual_seed(0)
        student = prune_channels(spec.build(num_classes), MODEL, 0.5, "l1")[0]
        with torch.no_grad():
            student.output_obj_layers.bias.fill_(-4.5)
        name = "half width, from scratch" + (" + distill" if with_teacher else "")
        variants.append((name, tuned(student, name, with_teacher, args.scratch_steps, 1e-2), [], "l1 50%, no fine-tune"))

    # experiment 3: low-rank factorisation at half the MACs of each layer, kept where ONNX Runtime
    # measured the layer faster, with and without the same fine-tuning
    plan, reports = plan_factorization(copy.deepcopy(teacher), torch.from_numpy(data.images[:8].astype(np.float32)),
                                       0.5, ("onnx",))
    log["low_rank"] = {"kept": sorted(plan), "candidates": len(reports)}
    factorised = copy.deepcopy(teacher)
    apply_factorization(factorised, plan)
    history = [{"step": "lowrank", "ratio": 0.5, "factorised": len(plan)}]
    plain_name = f"low-rank 0.5 ({len(plan)} layers), no fine-tune"
    variants.append((plain_name, factorised, history, None))
    variants.append((f"low-rank 0.5 ({len(plan)} layers) + fine-tune",
                     tuned(copy.deepcopy(factorised), "low-rank + fine-tune", False, args.steps, args.lr), history,
                     plain_name))
    plans = {name: plan for name, *_ in variants if name.startswith("low-rank")}

    rows = [export_variant(model, name, out / f"v{i}", num_classes, history, sizes, plans.get(name))
            for i, (name, model, history, _) in enumerate(variants)]
    for row in rows:
        row.update(evaluate_package(row["packages"][sizes[0]], count=args.eval, progress=False))
    shares = {name: twin for name, _, _, twin in variants}
    measure_latency([r for r in rows if shares[r["name"]] is None], sizes, args.rounds, args.calls)
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        if shares[row["name"]] is not None:
            row.update({k: v for k, v in by_name[shares[row["name"]]].items() if k.endswith(("_ms", "_ratio"))})
    print(table(rows, sizes))
    log["rows"] = [{k: v for k, v in r.items() if k != "packages"} for r in rows]
    (out / "compress.json").write_text(json.dumps(log, indent=1, default=str))


if __name__ == "__main__":
    main()
