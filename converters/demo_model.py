"""Train and evaluate the bundled ``demo-shapes`` detector (YOLO-FastestV2 on generated shapes).

    python -m converters.demo_model train --out converters/assets/yolo-fastestv2-shapes.pth
    python -m converters.demo_model evaluate            # COCO mAP of the exported ONNX on held-out images

Training is from scratch and seeded: the training images are rendered up front (two processes),
then the model sees them in a seeded order with random flips. The loss is YOLO-FastestV2's
(``yolo_fastest_v2_loss``); the optimiser is AdamW with warm-up and cosine decay rather than the
official SGD schedule, which needs hundreds of epochs and a pretrained backbone. The saved weights
are an exponential moving average of the training weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .compress.data import render_training_set
from .compress.train import fine_tune
from .demo_data import CLASS_NAMES, coco_split
from .models import get_spec

MODEL = "demo-shapes"


def train(out: str | Path, images: int = 6000, steps: int = 3000, batch: int = 16, lr: float = 1e-2,
          seed: int = 0, imgsz: int | None = None, workers: int = 2, threads: int = 1, progress: bool = True
          ) -> dict[str, float]:
    """Train ``demo-shapes`` from scratch and save its EMA weights (a plain state_dict) to ``out``.

    The loop is the shared ``converters.compress.train.fine_tune`` (task loss, AdamW, warm-up +
    cosine, EMA). ``threads``: torch threads; one is the robust choice on a small shared machine,
    where a second spinning OpenMP thread made each step several times slower.

    ``lr``: from scratch, the class loss sits at chance (the network has no shape features yet)
    for the first few hundred steps while box and objectness already improve; at 2e-3 over a
    700-step cosine it never left that plateau, at 1e-2 it leaves it after about 250 steps.
    ``images``: rendered once, so 6000 keeps 3000 steps of 16 at 8 passes over each image.
    """
    start = time.perf_counter()
    torch.set_num_threads(threads)
    spec = get_spec(MODEL)
    imgsz = imgsz or spec.default_imgsz
    torch.manual_seed(seed)
    data = render_training_set(images, seed, imgsz, workers, MODEL, progress)
    model = spec.build(len(CLASS_NAMES)).train()
    with torch.no_grad():  # start objectness near "nothing here": most anchors are background
        model.output_obj_layers.bias.fill_(-4.5)
    summary = fine_tune(model, MODEL, data, steps, lr, batch, seed=seed, threads=threads, progress=progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)
    return {"steps": steps, "images": images, "first_loss": summary["first_loss"],
            "last_loss": summary["last_loss"], "seconds": time.perf_counter() - start}


def evaluate_package(package: str | Path, count: int = 200, seed: int = 0, backend: str = "onnx",
                     precision: str = "fp32", progress: bool = True) -> dict[str, float]:
    """COCO metrics of a demo-shapes package, run by the runtime (score threshold 0.01) on held-out images."""
    from edge_runtime.detector import Detector
    from edge_runtime.evaluation.metrics import category_ids_for, coco_map, detections_to_coco

    images, truth = coco_split("val", count, seed, progress)
    detector = Detector(package, backend=backend, precision=precision, score_threshold=0.01)
    categories = category_ids_for(truth, detector.class_names)
    results = []
    for image, entry in zip(images, truth["images"]):
        results += detections_to_coco(detector(image), entry["id"], categories)
    return coco_map(truth, results)


def evaluate(weights: str | Path | None = None, count: int = 200, seed: int = 0,
             progress: Callable[[str], None] = lambda msg: None) -> dict[str, float]:
    """Export ``weights`` (default: the bundled file) to a temporary package and evaluate its FP32 ONNX."""
    from .export_onnx import export_package

    with tempfile.TemporaryDirectory() as tmp:
        export_package(MODEL, weights, tmp, progress=progress)
        return evaluate_package(tmp, count, seed)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train or evaluate the bundled demo-shapes detector.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from scratch on generated shapes, then evaluate")
    t.add_argument("--out", default=str(get_spec(MODEL).weights), help="weights file to write [the bundled one]")
    t.add_argument("--images", type=int, default=6000, help="training images rendered up front [6000]")
    t.add_argument("--steps", type=int, default=3000, help="optimiser steps [3000]")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("evaluate", help="COCO mAP of the exported FP32 ONNX on held-out generated images")
    e.add_argument("--weights", default=None, help="weights [the bundled file]")
    for q in (t, e):
        q.add_argument("--val", type=int, default=200, help="held-out images to evaluate on [200]")
    args = p.parse_args(argv)
    weights = args.weights if args.command == "evaluate" else args.out
    if args.command == "train":
        summary = train(args.out, args.images, args.steps, args.batch, seed=args.seed, threads=args.threads)
        print(f"trained {summary['steps']} steps on {summary['images']} images in {summary['seconds'] / 60:.1f} min: "
              f"loss {summary['first_loss']:.2f} -> {summary['last_loss']:.2f}; wrote {args.out}")
    stats = evaluate(weights, args.val)
    print(f"held-out {args.val} images, FP32 ONNX through the runtime: mAP@.5:.95 {stats['map']:.3f}, "
          f"AP50 {stats['map50']:.3f}, AP75 {stats['map75']:.3f}")


if __name__ == "__main__":
    main()
