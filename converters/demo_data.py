"""Procedural shapes dataset and demo clip: the data the bundled ``demo-shapes`` detector owns.

Everything is a pure function of a seed: a scene is sampled first (every random number drawn up
front into a ``Scene``), then rendered without further randomness, so the same seed gives
byte-identical images and labels, and a scene can be re-rendered without its objects (the tests
use that to check that every label covers drawn pixels). Only numpy and OpenCV: no torch.

    python -m converters.demo_data --out shapes/ --train 400 --val 200     # images + COCO json
    python -m converters.demo_data --out shapes/ --clip                    # also the 10 s demo video + COCO json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross")
IMAGE_SIZE = (320, 240)  # width, height of dataset images (4:3, as the demo clip)
CLIP_SIZE = (640, 480)
SPLIT_SEEDS = {"train": 0, "val": 1}  # mixed with the user's seed: the splits never share a scene
MIN_VISIBLE = 0.3  # objects less visible than this (occluded, cut by the border) get no label


def _unit_polygon(class_id: int) -> np.ndarray:
    """Outline of class ``class_id`` inside the unit circle, as (N, 2) float points."""
    if class_id == 0:  # circle
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if class_id == 1:  # square
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.75
    if class_id == 2:  # triangle, centred on its bounding circle
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), -np.sin(t)], 1)
    if class_id == 3:  # five-pointed star
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    arm = 0.3  # cross (plus sign)
    return np.array([[-arm, -1], [arm, -1], [arm, -arm], [1, -arm], [1, arm], [arm, arm], [arm, 1],
                     [-arm, 1], [-arm, arm], [-1, arm], [-1, -arm], [-arm, -arm]], float)


POLYGONS = tuple(_unit_polygon(c) for c in range(len(CLASS_NAMES)))


@dataclass(frozen=True)
class ShapeObject:
    class_id: int
    cx: float
    cy: float
    radius: float  # of the bounding circle, before the aspect stretch
    aspect: float  # x stretch; y is stretched by 1 / aspect
    angle: float  # radians
    fill: tuple[int, int, int]
    fill2: tuple[int, int, int]  # second colour of gradient / striped fills
    style: int  # 0 solid, 1 gradient, 2 stripes
    outline: tuple[int, int, int]
    outline_px: int  # 0: no outline

    def polygon(self) -> np.ndarray:
        pts = POLYGONS[self.class_id] * self.radius * np.array([self.aspect, 1.0 / self.aspect])
        c, s = np.cos(self.angle), np.sin(self.angle)
        return pts @ np.array([[c, s], [-s, c]]) + np.array([self.cx, self.cy])

    def moved(self, dx: float, dy: float, dangle: float) -> ShapeObject:
        return replace(self, cx=self.cx + dx, cy=self.cy + dy, angle=self.angle + dangle)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: tuple  # (kind, params...) see _background
    overlay: tuple | None  # a second background blended on top, with its alpha
    objects: tuple[ShapeObject, ...]
    occluders: tuple[tuple, ...]  # (x1, y1, x2, y2, thickness, colour): bars drawn over the objects
    gain: float
    bias: float
    cast: tuple[float, float, float]
    blur: float  # Gaussian sigma, 0 for none
    noise: float  # sigma of additive Gaussian noise
    noise_seed: int


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _sample_background(rng: np.random.Generator) -> tuple:
    kind = str(rng.choice(["noise", "gradient", "stripes", "checker", "blobs"]))
    a, b = _colour(rng), _colour(rng)
    if kind == "noise":
        return kind, a, float(rng.uniform(10, 50)), float(rng.uniform(0, 3)), int(rng.integers(2**31))
    if kind == "gradient":
        return kind, a, b, float(rng.uniform(0, 2 * np.pi))
    if kind == "stripes":
        return kind, a, b, float(rng.uniform(0, np.pi)), float(rng.uniform(6, 60)), bool(rng.random() < 0.5)
    if kind == "checker":
        return kind, a, b, int(rng.integers(8, 60))
    return kind, int(rng.integers(3, 10)), int(rng.integers(2**31))


@lru_cache(maxsize=4)
def _noise_field(height: int, width: int) -> np.ndarray:
    """One fixed field of N(0, 1) noise per image size; images take it at a random circular shift
    (drawing fresh normal samples for every image costs more than rendering the image)."""
    return np.random.default_rng(0).standard_normal((height, width, 3), np.float32)


def _noise(seed: int, height: int, width: int) -> np.ndarray:
    dy, dx = np.random.default_rng(seed).integers(0, [height, width])
    return np.roll(_noise_field(height, width), (int(dy), int(dx)), axis=(0, 1))


def _background(params: tuple, width: int, height: int) -> np.ndarray:
    kind = params[0]
    if kind == "noise":
        _, base, sigma, blur, seed = params
        noise = _noise(seed, height, width) * np.float32(sigma)
        if blur > 0.3:
            noise = cv2.GaussianBlur(noise, (0, 0), blur)
        return np.float32(base) + noise
    if kind == "blobs":
        _, cells, seed = params
        small = np.random.default_rng(seed).uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = np.float32(params[1]), np.float32(params[2])
    if kind == "gradient":
        d = xs * float(np.cos(params[3])) + ys * float(np.sin(params[3]))
        t = (d - d.min()) / max(float(d.max() - d.min()), 1.0)
    elif kind == "stripes":
        _, _, _, angle, period, hard = params
        phase = (xs * float(np.cos(angle)) + ys * float(np.sin(angle))) * float(2 * np.pi / period)
        t = (np.sin(phase) > 0).astype(np.float32) if hard else 0.5 + 0.5 * np.sin(phase)
    else:  # checker
        cell = params[3]
        t = ((np.arange(height)[:, None] // cell + np.arange(width)[None] // cell) % 2).astype(np.float32)
    return a + (b - a) * t[..., None]


def _sample_object(rng: np.random.Generator, width: int, height: int, placed: list[ShapeObject]
                   ) -> ShapeObject | None:
    short = min(width, height)
    for _ in range(20):  # rejection sampling: keep overlaps partial, never hide an object
        radius = float(rng.uniform(0.07, 0.24) * short)
        cx = float(rng.uniform(radius * 0.6, width - radius * 0.6))
        cy = float(rng.uniform(radius * 0.6, height - radius * 0.6))
        if all(np.hypot(cx - o.cx, cy - o.cy) > 0.75 * (radius + o.radius) for o in placed):
            break
    else:
        return None
    fill = _colour(rng)
    return ShapeObject(class_id=int(rng.integers(len(CLASS_NAMES))), cx=cx, cy=cy, radius=radius,
                       aspect=float(np.exp(rng.uniform(-0.25, 0.25))), angle=float(rng.uniform(0, 2 * np.pi)),
                       fill=fill, fill2=_colour(rng), style=int(rng.choice(3, p=[0.6, 0.25, 0.15])),
                       outline=tuple(255 - v for v in fill) if rng.random() < 0.5 else _colour(rng),
                       outline_px=int(rng.choice([0, 0, 1, 2, 3])))


def sample_scene(rng: np.random.Generator, width: int = IMAGE_SIZE[0], height: int = IMAGE_SIZE[1],
                 max_objects: int = 6) -> Scene:
    """Draw every random choice of one image: background, 1..max_objects shapes, occluders, photometry."""
    objects: list[ShapeObject] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        obj = _sample_object(rng, width, height, objects)
        if obj is not None:
            objects.append(obj)
    short = min(width, height)
    occluders = tuple(
        (*(float(v) for v in rng.uniform(0, 1, 4) * [width, height, width, height]),
         int(rng.uniform(0.01, 0.04) * short), _colour(rng))
        for _ in range(int(rng.choice([0, 0, 1, 2]))))
    overlay = (_sample_background(rng), float(rng.uniform(0.2, 0.5))) if rng.random() < 0.4 else None
    return Scene(width=width, height=height, background=_sample_background(rng), overlay=overlay,
                 objects=tuple(objects), occluders=occluders, gain=float(rng.uniform(0.6, 1.3)),
                 bias=float(rng.uniform(-40, 40)), cast=tuple(float(v) for v in rng.uniform(0.85, 1.15, 3)),
                 blur=float(rng.uniform(0.5, 1.5)) if rng.random() < 0.3 else 0.0,
                 noise=float(rng.uniform(0, 12)), noise_seed=int(rng.integers(2**31)))


def _fill(obj: ShapeObject, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The object's paint on the pixel grid ``xs``, ``ys`` (its bounding region)."""
    a, b = np.float32(obj.fill), np.float32(obj.fill2)
    if obj.style == 0:
        return a
    d = (xs - obj.cx) * float(np.cos(obj.angle)) + (ys - obj.cy) * float(np.sin(obj.angle))
    if obj.style == 1:
        t = np.clip(0.5 + d / (2 * obj.radius), 0, 1)
    else:
        t = (np.sin(d * (2 * np.pi / max(obj.radius / 2, 3.0))) > 0).astype(np.float32)
    return a + (b - a) * t[..., None]


def _region(points: np.ndarray, width: int, height: int, pad: int) -> tuple[int, int, int, int]:
    x1, y1 = np.floor(points.min(0)).astype(int) - pad
    x2, y2 = np.ceil(points.max(0)).astype(int) + pad + 1
    return max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)


def _coverage(points: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """Anti-aliased 0..1 coverage of a polygon over ``region`` (4 bits of sub-pixel precision)."""
    x1, y1, x2, y2 = region
    roi = np.zeros((y2 - y1, x2 - x1), np.uint8)
    cv2.fillPoly(roi, [np.round((points - (x1, y1)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return roi * np.float32(1 / 255)


def _object_covers(scene: Scene) -> list[tuple[int, tuple[int, int, int, int], np.ndarray]]:
    """(index in ``scene.objects``, region, anti-aliased coverage over the region) of each object that lies
    in the image, in drawing order."""
    covers = []
    for index, obj in enumerate(scene.objects):
        poly = obj.polygon()
        region = x1, y1, x2, y2 = _region(poly, scene.width, scene.height, obj.outline_px + 2)
        if x2 > x1 and y2 > y1:
            covers.append((index, region, _coverage(poly, region)))
    return covers


def _occluder_mask(scene: Scene) -> np.ndarray:
    """HxW uint8, 255 under the occluder bars (anti-aliased edges)."""
    hidden = np.zeros((scene.height, scene.width), np.uint8)
    for x1, y1, x2, y2, thick, _ in scene.occluders:
        cv2.line(hidden, (int(x1), int(y1)), (int(x2), int(y2)), 255, thick, cv2.LINE_AA)
    return hidden


def _visible_box(i: int, covers: list, hidden: np.ndarray) -> list[float] | None:
    """[x, y, w, h] of the pixels of ``covers[i]`` that no later object or occluder hides; None when
    less than ``MIN_VISIBLE`` of it shows."""
    _, (x1, y1, x2, y2), cover = covers[i]
    visible = cover * (1 - hidden[y1:y2, x1:x2] * np.float32(1 / 255))
    for _, (a1, b1, a2, b2), later in covers[i + 1:]:
        u1, v1, u2, v2 = max(x1, a1), max(y1, b1), min(x2, a2), min(y2, b2)
        if u1 < u2 and v1 < v2:
            visible[v1 - y1:v2 - y1, u1 - x1:u2 - x1] *= 1 - later[v1 - b1:v2 - b1, u1 - a1:u2 - a1]
    ys, xs = np.nonzero(visible > 0.5)
    if not len(xs) or float(visible.sum()) < MIN_VISIBLE * float(cover.sum()):
        return None
    return [float(x1 + xs.min()), float(y1 + ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _visible_boxes(covers: list, hidden: np.ndarray) -> list[tuple[int, list[float]]]:
    """(index in ``scene.objects``, visible box) of each object at least ``MIN_VISIBLE`` visible."""
    return [(covers[i][0], box) for i in range(len(covers)) if (box := _visible_box(i, covers, hidden)) is not None]


def scene_boxes(scene: Scene) -> list[tuple[int, list[float]]]:
    """``render_scene``'s boxes without drawing the image, each with the index of its object in
    ``scene.objects`` (what a clip that follows objects from frame to frame needs)."""
    return _visible_boxes(_object_covers(scene), _occluder_mask(scene))


def scene_background(scene: Scene) -> np.ndarray:
    """The scene's background alone (float32): the part of a frame that a moving clip can reuse."""
    image = _background(scene.background, scene.width, scene.height)
    if scene.overlay is not None:
        params, alpha = scene.overlay
        image = (1 - alpha) * image + alpha * _background(params, scene.width, scene.height)
    return image.astype(np.float32, copy=False)  # numpy scalars can promote to float64 on the way


def render_scene(scene: Scene, background: np.ndarray | None = None
                 ) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """Scene -> (HxWx3 uint8 BGR image, [(class_id, [x, y, w, h]) of each visible object]).

    A box is the extent of the object's *visible* pixels (what COCO boxes mean), so a shape cut by
    the border or by a later shape gets a box around what can be seen of it. ``background``: the
    result of ``scene_background(scene)`` when the caller has it already.
    """
    w, h = scene.width, scene.height
    image = (scene_background(scene) if background is None else background).copy()
    covers = _object_covers(scene)
    for index, (x1, y1, x2, y2), cover in covers:
        obj = scene.objects[index]
        ys, xs = np.mgrid[y1:y2, x1:x2].astype(np.float32)
        roi = image[y1:y2, x1:x2]
        roi *= 1 - cover[..., None]
        roi += _fill(obj, xs, ys) * cover[..., None]
        if obj.outline_px:
            cv2.polylines(image, [np.round(obj.polygon() * 16).astype(np.int32)], True, obj.outline, obj.outline_px,
                          cv2.LINE_AA, shift=4)
    hidden = _occluder_mask(scene)
    if scene.occluders:
        paint = np.zeros_like(image)
        for x1, y1, x2, y2, thick, colour in scene.occluders:
            cv2.line(paint, (int(x1), int(y1)), (int(x2), int(y2)), colour, thick)
        rows, columns = np.nonzero(hidden.any(1))[0], np.nonzero(hidden.any(0))[0]
        if len(rows):  # blend only where the bars are: elsewhere the blend leaves every pixel as it is
            block = np.s_[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
            bars = hidden[block].astype(np.float32)[..., None] * np.float32(1 / 255)
            image[block] = image[block] * (1 - bars) + paint[block] * bars
    labels = [(scene.objects[index].class_id, box) for index, box in _visible_boxes(covers, hidden)]
    image *= scene.gain * np.float32(scene.cast)
    image += np.float32(scene.bias)
    if scene.blur:
        image = cv2.GaussianBlur(image, (0, 0), scene.blur)
    if scene.noise:
        image += _noise(scene.noise_seed, h, w) * np.float32(scene.noise)
    return np.clip(image, 0, 255, out=image).round(out=image).astype(np.uint8), labels


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``: independent of every other image's."""
    return np.random.default_rng([seed, SPLIT_SEEDS[split], index])


def make_image(seed: int, split: str, index: int) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One dataset image and its labels: the same (seed, split, index) always gives the same bytes."""
    return render_scene(sample_scene(scene_rng(seed, split, index)))


def coco_categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]


def coco_ground_truth(file_names: list[str], labels: list[list[tuple[int, list[float]]]], size: tuple[int, int],
                      description: str) -> dict:
    """COCO ground truth of images ``file_names`` (ids 1, 2, ...) with ``render_scene`` labels; ``size`` (w, h)."""
    entries, annotations = [], []
    for image_id, (name, image_labels) in enumerate(zip(file_names, labels), 1):
        entries.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
        for class_id, box in image_labels:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": class_id + 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {"images": entries, "annotations": annotations, "categories": coco_categories(),
            "info": {"description": description}}


def coco_split(split: str, count: int, seed: int = 0, progress: bool = True) -> tuple[list[np.ndarray], dict]:
    """Images 0..count-1 of ``split`` and their COCO ground truth (file names ``<split>/<index>.png``).

    COCO category ids are 1-based: class ``i`` of ``CLASS_NAMES`` is category ``i + 1``.
    """
    images, labels = [], []
    for index in tqdm(range(count), desc=f"generating {split}", unit="img", disable=not progress, leave=False):
        image, image_labels = make_image(seed, split, index)
        images.append(image)
        labels.append(image_labels)
    return images, coco_ground_truth([f"{split}/{index:06d}.png" for index in range(count)], labels,
                                     IMAGE_SIZE, f"edge-runtime demo shapes, {split}, seed {seed}")


def write_split(out: str | Path, split: str, count: int, seed: int = 0, progress: bool = True) -> Path:
    """Write ``count`` images of ``split`` under ``out/<split>/`` (PNG: exact pixels) and ``out/<split>.json``."""
    out = Path(out)
    images, coco = coco_split(split, count, seed, progress)
    (out / split).mkdir(parents=True, exist_ok=True)
    for image, entry in zip(images, coco["images"]):
        cv2.imwrite(str(out / entry["file_name"]), image)
    path = out / f"{split}.json"
    path.write_text(json.dumps(coco))
    return path


def clip_labelled(seed: int = 0, seconds: float = 10.0, fps: int = 15, size: tuple[int, int] = CLIP_SIZE
                  ) -> Iterator[tuple[np.ndarray, list[tuple[int, list[float]]]]]:
    """Frames of the demo clip with their labels (as ``render_scene``): shapes drifting, turning and
    bouncing over one textured background."""
    rng = np.random.default_rng([seed, 2])
    w, h = size
    scene = sample_scene(rng, w, h, max_objects=7)
    scene = replace(scene, occluders=(), blur=0.0, gain=max(scene.gain, 0.9))
    speed = rng.uniform(-1, 1, (len(scene.objects), 3)) * [w / 6, h / 6, 1.0]  # px/s, px/s, rad/s
    objects = list(scene.objects)
    background = scene_background(scene)
    for index in range(int(seconds * fps)):
        yield render_scene(replace(scene, objects=tuple(objects), noise_seed=scene.noise_seed + index), background)
        for i, obj in enumerate(objects):
            vx, vy, va = speed[i]
            nx, ny = obj.cx + vx / fps, obj.cy + vy / fps
            if not obj.radius < nx < w - obj.radius:
                speed[i, 0] = -vx
            if not obj.radius < ny < h - obj.radius:
                speed[i, 1] = -vy
            objects[i] = obj.moved(speed[i, 0] / fps, speed[i, 1] / fps, va / fps)


def clip_frames(seed: int = 0, seconds: float = 10.0, fps: int = 15, size: tuple[int, int] = CLIP_SIZE
                ) -> Iterator[np.ndarray]:
    """Frames of the demo clip alone."""
    return (image for image, _ in clip_labelled(seed, seconds, fps, size))


def clip_ground_truth(name: str, labels: list[list[tuple[int, list[float]]]], size: tuple[int, int] = CLIP_SIZE
                      ) -> dict:
    """COCO ground truth of a clip: image id ``i + 1`` is frame ``i`` (file name ``<name>#<i>``)."""
    return coco_ground_truth([f"{name}#{index}" for index in range(len(labels))], labels, size,
                             f"edge-runtime demo clip {name}, one image per frame")


def write_clip(path: str | Path, seed: int = 0, seconds: float = 10.0, fps: int = 15,
               size: tuple[int, int] = CLIP_SIZE, progress: bool = True) -> Path:
    """Write the demo clip as MJPG .avi (an encoder every OpenCV build has) and its COCO ground truth
    next to it (same name, .json)."""
    path = Path(path).with_suffix(".avi")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write an MJPG video here")
    labels = []
    try:
        for frame, frame_labels in tqdm(clip_labelled(seed, seconds, fps, size), total=int(seconds * fps),
                                        desc="demo clip", unit="frame", disable=not progress, leave=False):
            writer.write(frame)
            labels.append(frame_labels)
    finally:
        writer.release()
    path.with_suffix(".json").write_text(json.dumps(clip_ground_truth(path.name, labels, size)))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Generate the demo shapes dataset (COCO json) and demo clip.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=0, help="training images [0]")
    p.add_argument("--val", type=int, default=200, help="held-out images [200]")
    p.add_argument("--clip", action="store_true",
                   help="also write the 10 s demo clip (shapes.avi) and its COCO ground truth (shapes.json)")
    args = p.parse_args(argv)
    for split, count in (("train", args.train), ("val", args.val)):
        if count:
            print(write_split(args.out, split, count, args.seed))
    if args.clip:
        print(write_clip(Path(args.out) / "shapes.avi", args.seed))


if __name__ == "__main__":
    main()
