"""Training data for fine-tuning, distillation and QAT: images preprocessed by the runtime's own code.

``TrainingData`` holds the whole set in memory as the model sees it (float16 NCHW, halving memory)
with YOLO-style labels (class, cx, cy, w, h in 0..1 of the model input), so training never decodes
an image twice. It comes from the generated shapes (``"demo"``) or from a labelled folder read by
``edge_runtime.evaluation.labels`` (COCO json, YOLO txt, VOC xml).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from edge_runtime.evaluation.labels import LabelledImage, match_classes, read_labels
from edge_runtime.preprocess import ImagePreprocessor

from ..demo_data import make_image
from ..models import get_spec

DEMO = "demo"


@dataclass
class TrainingData:
    images: np.ndarray  # (N, 3, H, W) float16, preprocessed for the model
    labels: list[np.ndarray]  # per image (k, 5) float32: class, cx, cy, w, h in 0..1 of the model input
    source: str
    vertical_flips: bool = True  # generated shapes have no "up"; photos do


def _to_input(image: np.ndarray, preprocess: ImagePreprocessor, boxes_xyxy: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """The float16 model tensor of ``image`` and its (k, 4) pixel boxes as cx, cy, w, h in 0..1 of the
    input, mapped through the preprocessor's own affine (any resize mode, letterbox included)."""
    tensor, meta = preprocess(image)
    forward = cv2.invertAffineTransform(meta.to_original)
    h, w = preprocess.h, preprocess.w
    corners = boxes_xyxy.reshape(-1, 2, 2) @ forward[:, :2].T + forward[:, 2]
    x1, y1 = corners[:, 0, 0].clip(0, w), corners[:, 0, 1].clip(0, h)
    x2, y2 = corners[:, 1, 0].clip(0, w), corners[:, 1, 1].clip(0, h)
    rows = np.stack([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], 1)
    return tensor[0].astype(np.float16), rows.astype(np.float32)


def _shapes_sample(job: tuple[int, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    """Generated training image ``index`` as ``model``'s preprocessing gives it, with its labels."""
    seed, index, imgsz, model = job
    image, labels = make_image(seed, "train", index)
    boxes = np.asarray([[x, y, x + bw, y + bh] for _, (x, y, bw, bh) in labels], np.float64).reshape(-1, 4)
    tensor, rows = _to_input(image, ImagePreprocessor(get_spec(model).input_spec(imgsz)), boxes)
    classes = np.asarray([c for c, _ in labels], np.float32).reshape(-1, 1)
    return tensor, np.concatenate([classes, rows], 1)


def render_training_set(count: int, seed: int, imgsz: int, workers: int = 2, model: str = "demo-shapes",
                        progress: bool = True) -> TrainingData:
    """``count`` generated training images (shapes), preprocessed for ``model``."""
    jobs = [(seed, i, imgsz, model) for i in range(count)]
    bar = {"total": count, "desc": "rendering training images", "unit": "img", "leave": False,
           "disable": not progress}
    if workers <= 1:
        samples = [_shapes_sample(job) for job in tqdm(jobs, **bar)]
    else:  # spawn: a forked torch process can deadlock in its thread pools
        with get_context("spawn").Pool(workers) as pool:
            samples = list(tqdm(pool.imap(_shapes_sample, jobs, chunksize=16), **bar))
    return TrainingData(np.stack([s[0] for s in samples]), [s[1] for s in samples], f"generated shapes (seed {seed})")


def _folder_sample(image: LabelledImage, preprocess: ImagePreprocessor, to_model: dict[str, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    pixels = cv2.imread(str(image.path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{image.path}: OpenCV cannot read this image")
    kept = [b for b in image.boxes if not b.ignore and b.label in to_model]
    boxes = np.asarray([[b.x1, b.y1, b.x2, b.y2] for b in kept], np.float64).reshape(-1, 4)
    tensor, rows = _to_input(pixels, preprocess, boxes)
    classes = np.asarray([to_model[b.label] for b in kept], np.float32).reshape(-1, 1)
    labelled = np.concatenate([classes, rows], 1)
    return tensor, labelled[(labelled[:, 3] > 0) & (labelled[:, 4] > 0)]  # boxes cut away by a letterbox


def read_training_folder(model_name: str, labels: str | Path, imgsz: int, class_names: Sequence[str] | None = None,
                         images: str | Path | None = None, limit: int | None = None, progress: bool = True
                         ) -> TrainingData:
    """A labelled dataset (any format ``edge_runtime.evaluation.labels`` reads) preprocessed for ``model_name``.

    ``class_names``: the model's classes; label classes are matched to them by name / alias and the
    unmatched ones left out. None: the labels' own class order is the model's.
    """
    dataset = read_labels(labels, images)
    names = list(class_names) if class_names is not None else dataset.class_names
    to_model = match_classes(dataset.class_names, names).to_model
    if not to_model:
        raise ValueError(f"{labels}: none of its classes ({', '.join(dataset.class_names[:5])}...) are the model's")
    preprocess = ImagePreprocessor(get_spec(model_name).input_spec(imgsz))
    chosen = dataset.images[:limit] if limit else dataset.images
    samples = [_folder_sample(image, preprocess, to_model)
               for image in tqdm(chosen, desc="reading training images", unit="img", disable=not progress,
                                 leave=False)]
    return TrainingData(np.stack([s[0] for s in samples]), [s[1] for s in samples], str(labels),
                        vertical_flips=False)


def load_training_data(model_name: str, data: str | Path, imgsz: int | None = None, count: int = 2000,
                       seed: int = 0, class_names: Sequence[str] | None = None, workers: int = 2,
                       progress: bool = True) -> TrainingData:
    """``"demo"``: ``count`` generated shapes images; else a labels file / folder (at most ``count`` images)."""
    imgsz = imgsz or get_spec(model_name).default_imgsz
    if str(data) == DEMO:
        return render_training_set(count, seed, imgsz, workers, model_name, progress)
    return read_training_folder(model_name, data, imgsz, class_names, limit=count, progress=progress)


def augmented_batch(data: TrainingData, ids: np.ndarray, rng: np.random.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``ids`` and their (T, 6) targets (image, class, cx, cy, w, h) with random horizontal
    (and, when the data allows, vertical) flips."""
    x = torch.from_numpy(data.images[ids].astype(np.float32))
    rows = []
    for k, i in enumerate(ids):
        t = data.labels[i].copy()
        if rng.random() < 0.5:
            x[k] = x[k].flip(-1)
            t[:, 1] = 1 - t[:, 1]
        if data.vertical_flips and rng.random() < 0.5:
            x[k] = x[k].flip(-2)
            t[:, 2] = 1 - t[:, 2]
        rows.append(np.concatenate([np.full((len(t), 1), k, np.float32), t], 1))
    return x, torch.from_numpy(np.concatenate(rows))
