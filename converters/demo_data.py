"""Procedural shapes dataset and demo clip: the data the bundled ``demo-shapes`` detector owns.

Everything is a pure function of a seed: a scene is sampled first (every random number drawn up
front into a ``Scene``), then rendered without further randomness, so the same seed gives
byte-identical images and labels, and a scene can be re-rendered without its objects (the tests
use that to check that every label covers drawn pixels). Only numpy and OpenCV: no torch.

    python -m converters.demo_data --out shapes/ --train 400 --val 200     # images + COCO json
    python -m converters.demo_data --out shapes/ --clip                    # also the 10 s demo video + COCO json
    python -m converters.demo_data --out shapes/ --val 0 --tracking-clip   # the tracking clip + its ids, crossings
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


def _sample_background(rng: np.random.Generator,
                       kinds: tuple[str, ...] = ("noise", "gradient", "stripes", "checker", "blobs")) -> tuple:
    kind = str(rng.choice(list(kinds)))
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


def _visible_part(i: int, covers: list, hidden: np.ndarray) -> np.ndarray:
    """The coverage of ``covers[i]`` that no later object or occluder hides."""
    _, (x1, y1, x2, y2), cover = covers[i]
    visible = cover * (1 - hidden[y1:y2, x1:x2] * np.float32(1 / 255))
    for _, (a1, b1, a2, b2), later in covers[i + 1:]:
        u1, v1, u2, v2 = max(x1, a1), max(y1, b1), min(x2, a2), min(y2, b2)
        if u1 < u2 and v1 < v2:
            visible[v1 - y1:v2 - y1, u1 - x1:u2 - x1] *= 1 - later[v1 - b1:v2 - b1, u1 - a1:u2 - a1]
    return visible


def _pixel_box(visible: np.ndarray, region: tuple[int, int, int, int]) -> list[float] | None:
    """[x, y, w, h] in image pixels of the pixels of ``visible`` (over ``region``) more than half covered."""
    ys, xs = np.nonzero(visible > 0.5)
    if not len(xs):
        return None
    return [float(region[0] + xs.min()), float(region[1] + ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def _visible_boxes(covers: list, hidden: np.ndarray) -> list[tuple[int, list[float]]]:
    """(index in ``scene.objects``, [x, y, w, h] of its visible pixels) of each object of which at least
    ``MIN_VISIBLE`` of the part inside the image shows."""
    boxes = []
    for i, (index, region, cover) in enumerate(covers):
        visible = _visible_part(i, covers, hidden)
        if float(visible.sum()) >= MIN_VISIBLE * float(cover.sum()) and (box := _pixel_box(visible, region)):
            boxes.append((index, box))
    return boxes


def scene_boxes(scene: Scene) -> list[tuple[int, list[float], float]]:
    """(index in ``scene.objects``, [x, y, w, h] of its visible pixels, visible fraction of its whole outline)
    of each object with a visible pixel, without drawing the image. Unlike ``render_scene``'s labels, the
    fraction counts the part outside the image as hidden."""
    covers, hidden = _object_covers(scene), _occluder_mask(scene)
    boxes = []
    for i, (index, region, _) in enumerate(covers):
        visible = _visible_part(i, covers, hidden)
        if box := _pixel_box(visible, region):
            poly = scene.objects[index].polygon()
            whole = _coverage(poly, (*np.floor(poly.min(0)).astype(int) - 2, *np.ceil(poly.max(0)).astype(int) + 3))
            boxes.append((index, box, min(float(visible.sum()) / float(whole.sum()), 1.0)))
    return boxes


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


# The tracking clip: scripted objects with known ids, a pillar to hide behind, same-class paths that cross
# and a counting line. Positions are scripted in pixels of a 640x480 frame and scaled to the clip's size.
TRACKING_REFERENCE = (640, 480)
COUNT_LINE = (0.0, 240.0, 640.0, 240.0)  # x1, y1, x2, y2 (reference pixels): "in" is downwards across it
PILLAR = (400.0, 120.0)  # centre x and width of the vertical bar drawn over everything (reference pixels)
# (class id, bounding radius, x, y, t, vx, vy): the object's centre passes (x, y) at t seconds with constant
# velocity (vx, vy) px/s; it exists while its bounding circle touches the frame. Drawing order is this order.
TRACKING_SCRIPT = (
    # line crossers, clear of the pillar and of the bands above and below the line where the others move
    (2, 60.0, 110.0, 240.0, 2.5, 0.0, 95.0),  # triangle, in
    (3, 62.0, 560.0, 240.0, 4.0, 0.0, 110.0),  # star, in
    (4, 64.0, 260.0, 240.0, 7.0, 5.0, -85.0),  # cross, out
    (2, 58.0, 562.0, 240.0, 10.5, -4.0, -100.0),  # triangle, out
    (4, 62.0, 130.0, 240.0, 12.0, 8.0, 120.0),  # cross, in
    (3, 60.0, 265.0, 240.0, 13.5, 0.0, -125.0),  # star, out
    # the top band: two circles meet head on (the later one drawn over the other), both pass behind the pillar
    (0, 60.0, 190.0, 76.0, 4.0, 120.0, 3.0),
    (0, 55.0, 190.0, 112.0, 4.0, -115.0, -3.0),
    # the bottom band: one square overtakes another (a long overlap), both pass behind the pillar
    (1, 62.0, 120.0, 380.0, 10.0, 90.0, 0.0),
    (1, 58.0, 120.0, 404.0, 10.0, 140.0, -3.0),
    # small enough to vanish wholly behind the pillar
    (2, 52.0, 400.0, 90.0, 11.5, -110.0, 0.0),
    (4, 52.0, 400.0, 400.0, 3.0, 110.0, 0.0),
)


@dataclass(frozen=True)
class TrackingTruth:
    """What a tracker is scored against. Boxes are COCO [x, y, w, h] of visible pixels (as ``render_scene``).

    frames: per frame, (object id, class id, box) of every object of which at least ``MIN_VISIBLE`` of the
    whole outline shows (the part outside the image counts as hidden); ids are 1-based, numbered in order
    of appearance and never reused.
    visibility: the visible fraction of each of those objects' outline, as ``frames`` (1: in full view).
    count_line: (x1, y1, x2, y2) in pixels. A crossing is "in" when an object's centre moves from the left
    of the directed line p1 -> p2 to its right as seen in the image (y down): downwards for a line drawn
    left to right; "out" the other way.
    crossings: (frame, object id, class id, "in" | "out"): the first frame whose centre lies on the new side,
    the centre being that of the object's whole outline's bounding box (where a tracker's box centre is
    while the object is in full view, as it is at every crossing of this clip).
    """

    frames: list[list[tuple[int, int, list[float]]]]
    visibility: list[list[float]]
    count_line: tuple[float, float, float, float]
    crossings: list[tuple[int, int, int, str]]
    size: tuple[int, int]
    fps: int

    def to_json(self) -> dict:
        return {"size": list(self.size), "fps": self.fps, "class_names": list(CLASS_NAMES),
                "count_line": list(self.count_line),
                "crossings": [{"frame": f, "id": i, "class_id": c, "direction": d} for f, i, c, d in self.crossings],
                "frames": [[{"id": i, "class_id": c, "bbox": box, "visibility": v}
                            for (i, c, box), v in zip(objects, fractions)]
                           for objects, fractions in zip(self.frames, self.visibility)]}

    @classmethod
    def from_json(cls, data: dict) -> TrackingTruth:
        return cls(frames=[[(o["id"], o["class_id"], o["bbox"]) for o in objects] for objects in data["frames"]],
                   visibility=[[o["visibility"] for o in objects] for objects in data["frames"]],
                   count_line=tuple(data["count_line"]),
                   crossings=[(c["frame"], c["id"], c["class_id"], c["direction"]) for c in data["crossings"]],
                   size=tuple(data["size"]), fps=data["fps"])


@dataclass(frozen=True)
class TrackingScript:
    """Every frame of the tracking clip as a ``Scene`` (no pixels yet) and the id of each of its objects."""

    scenes: tuple[Scene, ...]
    ids: tuple[tuple[int, ...], ...]  # ids[k][j]: id of scenes[k].objects[j]
    count_line: tuple[float, float, float, float]
    crossings: tuple[tuple[int, int, int, str], ...]
    fps: int

    def frames(self) -> Iterator[np.ndarray]:
        """The clip's images, drawn one at a time."""
        background = scene_background(self.scenes[0])
        return (render_scene(scene, background)[0] for scene in self.scenes)

    def truth(self) -> TrackingTruth:
        frames, visibility = [], []
        for scene, ids in zip(self.scenes, self.ids):
            shown = [(j, box, fraction) for j, box, fraction in scene_boxes(scene) if fraction >= MIN_VISIBLE]
            frames.append([(ids[j], scene.objects[j].class_id, box) for j, box, _ in shown])
            visibility.append([round(fraction, 4) for *_, fraction in shown])
        return TrackingTruth(frames=frames, visibility=visibility, count_line=self.count_line,
                             crossings=list(self.crossings), size=(self.scenes[0].width, self.scenes[0].height),
                             fps=self.fps)


def _line_distance(line: tuple[float, float, float, float], x: float, y: float) -> float:
    """Signed distance of (x, y) from the line through ``line``'s ends: positive on the right of the directed
    line as seen in the image (y down)."""
    x1, y1, x2, y2 = line
    return ((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)) / float(np.hypot(x2 - x1, y2 - y1))


def _line_side(line: tuple[float, float, float, float], x: float, y: float) -> bool:
    """True on the right of the directed line (image coordinates, y down)."""
    return _line_distance(line, x, y) > 0


def _segments_cross(line: tuple[float, float, float, float], a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the step a -> b (a and b on opposite sides of the line's extension) passes within the segment."""
    x1, y1, x2, y2 = line
    d = np.array([x2 - x1, y2 - y1])
    step = b - a
    denominator = step[0] * d[1] - step[1] * d[0]
    along = ((a[0] - x1) * step[1] - (a[1] - y1) * step[0]) / -denominator
    return 0.0 <= along <= 1.0


def line_crossings(line: tuple[float, float, float, float], centres: list[dict[int, np.ndarray]]
                   ) -> list[tuple[int, int, str]]:
    """(frame, object id, "in" | "out") of every step of an object's centre across the segment ``line``
    between consecutive frames (``centres[k]``: id -> (x, y) at frame k); the frame is the first one on the
    new side. "in": from the left of the directed line to its right as seen in the image (y down)."""
    events = []
    for k in range(1, len(centres)):
        for object_id, b in centres[k].items():
            a = centres[k - 1].get(object_id)
            if a is None or _line_side(line, *a) == _line_side(line, *b) or not _segments_cross(line, a, b):
                continue
            events.append((k, object_id, "in" if _line_side(line, *b) else "out"))
    return events


def _contrasting_colour(rng: np.random.Generator, against: tuple[int, int, int], distance: float = 150.0
                        ) -> tuple[int, int, int]:
    """A random colour at least ``distance`` (RGB Euclidean) away from ``against``."""
    while np.linalg.norm(np.subtract(colour := _colour(rng), against)) < distance:
        pass
    return colour


def _tracking_objects(rng: np.random.Generator, scale: float, background: tuple[int, int, int]
                      ) -> list[tuple[ShapeObject, np.ndarray, float]]:
    """Each scripted object's look at t=0 (position still to be set), velocity (px/s) and turn rate (rad/s);
    its paint stands out from the ``background`` colour (the demo detector misses faint shapes)."""
    objects = []
    for class_id, radius, *_, vx, vy in TRACKING_SCRIPT:
        fill = _contrasting_colour(rng, background)
        obj = ShapeObject(class_id=class_id, cx=0.0, cy=0.0, radius=radius * scale * float(rng.uniform(0.95, 1.05)),
                          aspect=float(np.exp(rng.uniform(-0.12, 0.12))), angle=float(rng.uniform(0, 2 * np.pi)),
                          fill=fill, fill2=_contrasting_colour(rng, background),
                          style=int(rng.choice(3, p=[0.6, 0.25, 0.15])),
                          outline=(0, 0, 0), outline_px=0)  # an outline would paint outside the boxes' coverage
        speed = float(rng.uniform(0.93, 1.07))
        objects.append((obj, np.array([vx, vy]) * scale * speed, float(rng.uniform(0.2, 0.7) * rng.choice([-1, 1]))))
    return objects


def _box(obj: ShapeObject) -> np.ndarray:
    poly = obj.polygon()
    return np.concatenate([poly.min(0), poly.max(0)])


def _unclean_crossing(scenes: list[Scene], ids: list[tuple[int, ...]], crossings: list, pillar: tuple[int, int]
                      ) -> str | None:
    """Why a crossing is not clean (near the border, behind the pillar, touching another object in the frames
    around it), or None when all are."""
    for frame, object_id, *_ in crossings:
        for k in range(max(frame - 2, 0), min(frame + 2, len(scenes))):
            boxes = {i: _box(o) for i, o in zip(ids[k], scenes[k].objects)}
            x1, y1, x2, y2 = boxes[object_id]
            w, h = scenes[k].width, scenes[k].height
            if x1 < 3 or y1 < 3 or x2 > w - 3 or y2 > h - 3:
                return f"object {object_id} touches the border at frame {k}"
            if x2 > pillar[0] - 3 and x1 < pillar[1] + 3:
                return f"object {object_id} is behind the pillar at frame {k}"
            for other, b in boxes.items():
                if other != object_id and b[0] < x2 + 3 and x1 < b[2] + 3 and b[1] < y2 + 3 and y1 < b[3] + 3:
                    return f"objects {object_id} and {other} touch at frame {k}"
    return None


def _tracking_frames(objects: list[tuple[ShapeObject, np.ndarray, float]], waypoints: list[tuple[np.ndarray, float]],
                     count: int, fps: int, size: tuple[int, int]) -> list[list[tuple[int, ShapeObject]]]:
    """(script index, object) of every object whose bounding circle touches frame k, for k < ``count``: each
    passes its waypoint (point, time) with constant velocity and turns at its rate."""
    w, h = size
    frames = []
    for k in range(count):
        t = k / fps
        live = []
        for index, ((obj, velocity, turn), (point, t_pass)) in enumerate(zip(objects, waypoints)):
            cx, cy = point + velocity * (t - t_pass)
            if -obj.radius < cx < w + obj.radius and -obj.radius < cy < h + obj.radius:
                live.append((index, replace(obj, cx=float(cx), cy=float(cy), angle=obj.angle + turn * t)))
        frames.append(live)
    return frames


def _box_centres(frames: list[list[tuple[int, ShapeObject]]]) -> list[dict[int, np.ndarray]]:
    """Per frame, script index -> centre of the object's whole outline's bounding box."""
    return [{index: _box(obj).reshape(2, 2).mean(0) for index, obj in live} for live in frames]


def tracking_script(seed: int = 0, seconds: float = 16.0, fps: int = 15, size: tuple[int, int] = CLIP_SIZE
                    ) -> TrackingScript:
    """The scripted tracking clip of ``seed`` (looks and small speed and size changes vary with it; the
    paths are ``TRACKING_SCRIPT``'s): frames as scenes, object ids, count line and ground-truth crossings."""
    rng = np.random.default_rng([seed, 3])
    w, h = size
    sx, sy = w / TRACKING_REFERENCE[0], h / TRACKING_REFERENCE[1]
    scale = min(sx, sy)
    pillar_x, pillar_width = PILLAR[0] * sx, max(int(round(PILLAR[1] * scale)), 1)
    pillar = (pillar_x, -pillar_width, pillar_x, h + pillar_width, pillar_width, _colour(rng))
    # one colour with texture (noise): patterns (stripes, checkers) and many-coloured blobs make the demo
    # detector miss and confuse shapes, and this clip is there to test the tracker
    base = Scene(width=w, height=h, background=_sample_background(rng, ("noise",)), overlay=None,
                 objects=(), occluders=(pillar,), gain=float(rng.uniform(0.9, 1.2)), bias=float(rng.uniform(-30, 30)),
                 cast=tuple(float(v) for v in rng.uniform(0.9, 1.1, 3)), blur=0.0, noise=float(rng.uniform(2, 10)),
                 noise_seed=int(rng.integers(2**31)))
    columns = np.nonzero(_occluder_mask(base).any(0))[0]
    line = (COUNT_LINE[0] * sx, COUNT_LINE[1] * sy, COUNT_LINE[2] * sx, COUNT_LINE[3] * sy)
    count = int(seconds * fps)
    why = "no attempt"
    for _ in range(20):  # redraw the looks until every crossing is clean
        objects = _tracking_objects(rng, scale, base.background[1])
        waypoints = [(np.array([x * sx, y * sy]), t) for _, _, x, y, t, _, _ in TRACKING_SCRIPT]
        frames = _tracking_frames(objects, waypoints, count, fps, size)
        # move each crossing object by under a frame's step so that its centre lies as far before the line in
        # one frame as past it in the next (about 3 px at 640x480): the frame of the crossing is then the same
        # for any box centre within a pixel or two of the truth
        centres = _box_centres(frames)
        for k, index, _ in line_crossings(line, centres):
            d0, d1 = (_line_distance(line, *centres[j][index]) for j in (k - 1, k))
            normal_speed = _line_distance(line, *(np.array(line[:2]) + objects[index][1]))  # px/s across the line
            point, t = waypoints[index]
            waypoints[index] = point, t + (d0 + d1) / 2 / normal_speed
        frames = _tracking_frames(objects, waypoints, count, fps, size)
        first = {}
        for k, live in enumerate(frames):
            for index, _ in live:
                first.setdefault(index, k)
        id_of = {index: rank + 1 for rank, index in enumerate(sorted(first, key=lambda i: (first[i], i)))}
        ids = [tuple(id_of[index] for index, _ in live) for live in frames]
        scenes = [replace(base, objects=tuple(obj for _, obj in live), noise_seed=base.noise_seed + k)
                  for k, live in enumerate(frames)]
        centres = [{id_of[index]: centre for index, centre in frame.items()} for frame in _box_centres(frames)]
        class_of = {id_of[index]: TRACKING_SCRIPT[index][0] for index in id_of}
        crossings = [(k, i, class_of[i], d) for k, i, d in line_crossings(line, centres)]
        why = _unclean_crossing(scenes, ids, crossings, (int(columns[0]), int(columns[-1]) + 1))
        for k, i, _, _ in crossings:  # the centre is about half a step from the line on both sides
            d0, d1 = (abs(_line_distance(line, *centres[j][i])) for j in (k - 1, k))
            if why is None and min(d0, d1) < 0.4 * (d0 + d1):
                why = f"object {i} crosses the line at frame {k} by only {min(d0, d1):.1f} px"
        if why is None:
            return TrackingScript(scenes=tuple(scenes), ids=tuple(ids), count_line=line, crossings=tuple(crossings),
                                  fps=fps)
    raise ValueError(f"tracking clip of seed {seed} at {w}x{h}: no clean line crossings after 20 draws ({why})")


def tracking_clip(seed: int = 0, seconds: float = 16.0, fps: int = 15, size: tuple[int, int] = CLIP_SIZE
                  ) -> tuple[Iterator[np.ndarray], TrackingTruth]:
    """The tracking clip's frames (drawn lazily, one at a time) and its ground truth (computed up front,
    without drawing): known ids, objects hidden by a pillar, same-class paths that cross, line crossings."""
    script = tracking_script(seed, seconds, fps, size)
    return script.frames(), script.truth()


def write_tracking_clip(path: str | Path, seed: int = 0, seconds: float = 16.0, fps: int = 15,
                        size: tuple[int, int] = CLIP_SIZE, progress: bool = True) -> Path:
    """Write the tracking clip as MJPG .avi and its ``TrackingTruth`` next to it (same name, .json)."""
    path = Path(path).with_suffix(".avi")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, truth = tracking_clip(seed, seconds, fps, size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write an MJPG video here")
    try:
        for frame in tqdm(frames, total=len(truth.frames), desc="tracking clip", unit="frame",
                          disable=not progress, leave=False):
            writer.write(frame)
    finally:
        writer.release()
    path.with_suffix(".json").write_text(json.dumps(truth.to_json()))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Generate the demo shapes dataset (COCO json) and demo clip.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=int, default=0, help="training images [0]")
    p.add_argument("--val", type=int, default=200, help="held-out images [200]")
    p.add_argument("--clip", action="store_true",
                   help="also write the 10 s demo clip (shapes.avi) and its COCO ground truth (shapes.json)")
    p.add_argument("--tracking-clip", action="store_true",
                   help="also write the 16 s tracking clip (tracking.avi) and its ground truth: ids, count line, "
                        "crossings (tracking.json)")
    args = p.parse_args(argv)
    for split, count in (("train", args.train), ("val", args.val)):
        if count:
            print(write_split(args.out, split, count, args.seed))
    if args.clip:
        print(write_clip(Path(args.out) / "shapes.avi", args.seed))
    if args.tracking_clip:
        print(write_tracking_clip(Path(args.out) / "tracking.avi", args.seed))


if __name__ == "__main__":
    main()
