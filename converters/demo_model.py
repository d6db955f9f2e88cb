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
import math
import tempfile
import time
from collections.abc import Callable
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.manifest import InputSpec
from edge_runtime.preprocess import ImagePreprocessor

from .demo_data import CLASS_NAMES, coco_split, make_image
from .models import get_spec
from .yolo_fastest_v2_loss import yolo_fastest_v2_loss

MODEL = "demo-shapes"


def _input_spec(imgsz: int) -> InputSpec:
    spec = get_spec(MODEL)
    return InputSpec(name="input", shape=(1, 3, imgsz, imgsz), layout="NCHW", dtype="float32", color=spec.color,
                     mean=spec.mean, std=spec.std, resize=spec.resize)


def _training_sample(job: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` as the runtime preprocesses it (float16 to halve memory) and its labels as
    (class, cx, cy, w, h) in 0..1, which a plain resize leaves unchanged."""
    seed, index, imgsz = job
    image, labels = make_image(seed, "train", index)
    tensor = ImagePreprocessor(_input_spec(imgsz))(image)[0][0].astype(np.float16)
    h, w = image.shape[:2]
    rows = [[c, (x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h] for c, (x, y, bw, bh) in labels]
    return tensor, np.asarray(rows, np.float32).reshape(-1, 5)


def render_training_set(count: int, seed: int, imgsz: int, workers: int = 2
                        ) -> tuple[np.ndarray, list[np.ndarray]]:
    jobs = [(seed, i, imgsz) for i in range(count)]
    bar = {"total": count, "desc": "rendering training images", "unit": "img", "leave": False}
    if workers <= 1:
        samples = [_training_sample(job) for job in tqdm(jobs, **bar)]
    else:  # spawn: a forked torch process can deadlock in its thread pools
        with get_context("spawn").Pool(workers) as pool:
            samples = list(tqdm(pool.imap(_training_sample, jobs, chunksize=16), **bar))
    return np.stack([s[0] for s in samples]), [s[1] for s in samples]


def _batch(images: np.ndarray, labels: list[np.ndarray], ids: np.ndarray, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and (T, 6) targets (image, class, cx, cy, w, h) with random horizontal/vertical flips."""
    x = torch.from_numpy(images[ids].astype(np.float32))
    rows = []
    for k, i in enumerate(ids):
        t = labels[i].copy()
        if rng.random() < 0.5:
            x[k] = x[k].flip(-1)
            t[:, 1] = 1 - t[:, 1]
        if rng.random() < 0.5:
            x[k] = x[k].flip(-2)
            t[:, 2] = 1 - t[:, 2]
        rows.append(np.concatenate([np.full((len(t), 1), k, np.float32), t], 1))
    return x, torch.from_numpy(np.concatenate(rows))


def train(out: str | Path, images: int = 6000, steps: int = 3000, batch: int = 16, lr: float = 1e-2,
          seed: int = 0, imgsz: int | None = None, workers: int = 2, threads: int = 1, progress: bool = True
          ) -> dict[str, float]:
    """Train ``demo-shapes`` from scratch and save its EMA weights (a plain state_dict) to ``out``.

    ``threads``: torch threads; one is the robust choice on a small shared machine, where a
    second spinning OpenMP thread made each step several times slower.

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
    rng = np.random.default_rng(seed)
    data, labels = render_training_set(images, seed, imgsz, workers)
    model = spec.build(len(CLASS_NAMES)).train()
    with torch.no_grad():  # start objectness near "nothing here": most anchors are background
        model.output_obj_layers.bias.fill_(-4.5)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (
        0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    anchors = torch.tensor(model.anchors, dtype=torch.float32).view(len(model.strides), model.anchor_num, 2)
    order = np.concatenate([rng.permutation(images) for _ in range(math.ceil(steps * batch / images))])
    bar = tqdm(range(steps), desc="training", unit="step", disable=not progress)
    losses = []
    for step in bar:
        x, targets = _batch(data, labels, order[step * batch:(step + 1) * batch], rng)
        loss, parts = yolo_fastest_v2_loss(model(x), targets, anchors, model.strides)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        decay = 0.999 * (1 - math.exp(-step / 200))  # short memory early, when weights move fast
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].copy_(ema[k] * decay + v.detach() * (1 - decay) if v.dtype.is_floating_point else v)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.2f}", **{k: f"{v:.2f}" for k, v in parts.items()})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ema, out)
    window = max(1, min(50, steps // 10))
    return {"steps": steps, "images": images, "first_loss": losses[0], "last_loss": float(np.mean(losses[-window:])),
            "seconds": time.perf_counter() - start}


def evaluate_package(package: str | Path, count: int = 200, seed: int = 0, backend: str = "onnx",
                     precision: str = "fp32", progress: bool = True) -> dict[str, float]:
    """COCO metrics of a demo-shapes package, run by the runtime (score threshold 0.01) on held-out images."""
    from edge_runtime.detector import Detector
    from edge_runtime.metrics import category_ids_for, coco_map, detections_to_coco

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
