"""Official pretrained checkpoints: where their authors publish them, and a local cache.

``edge-runtime export --weights official`` and ``edge-runtime fetch`` use this table. Files land in
``$EDGE_RUNTIME_CACHE`` (default ``~/.cache/edge-runtime``) under ``weights/<name>/``.
``$EDGE_RUNTIME_WEIGHTS_MIRROR`` replaces every URL by ``<mirror>/<file name>`` (an internal mirror,
or a loopback server in the tests).

Checksums: the YOLO-FastestV2 and YOLO-Fastest 1.1 files were hashed from byte-identical copies of
the official files. The NanoDet-Plus checkpoints on the GitHub release could not be hashed here
(no copy of the official bytes was available offline), so they are trusted on first download: the
sha256 seen then is recorded in the cache and checked on every later use (see ``download``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .download import download

NANODET_RELEASE = "https://github.com/RangiLyu/nanodet/releases/download/v1.0.0-alpha-1"
YOLO_FASTESTV2_RAW = "https://raw.githubusercontent.com/dog-qiuqiu/Yolo-FastestV2/main/modelzoo"
YOLO_FASTEST_RAW = "https://raw.githubusercontent.com/dog-qiuqiu/Yolo-Fastest/master/ModelZoo/yolo-fastest-1.1_coco"
CACHE_ENV, MIRROR_ENV = "EDGE_RUNTIME_CACHE", "EDGE_RUNTIME_WEIGHTS_MIRROR"


@dataclass(frozen=True)
class OfficialFile:
    url: str
    sha256: str | None  # None: not published and not known here -> trust on first use

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


@dataclass(frozen=True)
class OfficialWeights:
    name: str
    model: str | None  # the --model that exports it; None: fetch only (no exporter for the format yet)
    imgsz: int | None  # input size it was trained at
    files: tuple[OfficialFile, ...]  # the first one is what --weights receives
    description: str


def _nanodet(name: str, model: str, imgsz: int) -> OfficialWeights:
    return OfficialWeights(name, model, imgsz, (OfficialFile(f"{NANODET_RELEASE}/{model}_{imgsz}_checkpoint.ckpt", None),),
                           f"{model} COCO, {imgsz}x{imgsz}, training checkpoint (RangiLyu/nanodet v1.0.0-alpha-1)")


# the first entry of a model is its default for ``--weights official`` without a matching --imgsz
OFFICIAL: dict[str, OfficialWeights] = {w.name: w for w in (
    _nanodet("nanodet-plus-m-416", "nanodet-plus-m", 416),
    _nanodet("nanodet-plus-m-320", "nanodet-plus-m", 320),
    _nanodet("nanodet-plus-m-1.5x-416", "nanodet-plus-m-1.5x", 416),
    _nanodet("nanodet-plus-m-1.5x-320", "nanodet-plus-m-1.5x", 320),
    OfficialWeights("yolo-fastestv2", "yolo-fastestv2", 352, (OfficialFile(
        f"{YOLO_FASTESTV2_RAW}/coco2017-0.241078ap-model.pth",
        "bdd956aa079bf1cdd3e0090a295ac26d73c40aef7b61b6405981b1afcbea985c"),),
        "YOLO-FastestV2 COCO state_dict, 352x352 (dog-qiuqiu/Yolo-FastestV2 modelzoo)"),
    OfficialWeights("yolo-fastest-1.1", None, 320, (
        OfficialFile(f"{YOLO_FASTEST_RAW}/yolo-fastest-1.1.weights",
                     "1c445c42bbd6df63edea2cc69f99667b5650d663ca11e34b116240740cd42890"),
        OfficialFile(f"{YOLO_FASTEST_RAW}/yolo-fastest-1.1.cfg",
                     "f6df5775c1e862998cf69046eba9265be3ae84dfe8b2caab7529823f0795bf70")),
        "YOLO-Fastest 1.1 COCO darknet cfg + weights, 320x320 (dog-qiuqiu/Yolo-Fastest ModelZoo)"),
    OfficialWeights("yolo-fastest-1.1-xl", None, 320, (
        OfficialFile(f"{YOLO_FASTEST_RAW}/yolo-fastest-1.1-xl.weights",
                     "fac5fb41786c1f38f04972a658443b189f48720d7d117f9a044100e98a35b0c5"),
        OfficialFile(f"{YOLO_FASTEST_RAW}/yolo-fastest-1.1-xl.cfg",
                     "c458427acc4fbeabceff4528ef7b65b066c0308ce599460f8ba299eba63abad3")),
        "YOLO-Fastest 1.1 XL COCO darknet cfg + weights, 320x320 (dog-qiuqiu/Yolo-Fastest ModelZoo)"),
)}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "edge-runtime")


def cached_path(weights: OfficialWeights, file: OfficialFile) -> Path:
    return cache_dir() / "weights" / weights.name / file.filename


def source_url(file: OfficialFile) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{file.filename}" if mirror else file.url


def resolve(spec: str, model: str | None = None, imgsz: int | None = None) -> OfficialWeights:
    """``official`` (the checkpoint for ``model`` at ``imgsz``, else the model's default) or
    ``official:<name>`` -> the table entry."""
    _, _, name = spec.partition(":")
    if name:
        if name not in OFFICIAL:
            raise ValueError(f"{spec}: unknown official weights (known: {', '.join(OFFICIAL)})")
        weights = OFFICIAL[name]
        if model is not None and weights.model != model:
            raise ValueError(f"{spec}: holds {weights.model or 'darknet'} weights, not --model {model}")
        return weights
    candidates = [w for w in OFFICIAL.values() if w.model == model]
    if not candidates:
        raise ValueError(f"--weights official: no official checkpoint is registered for --model {model} "
                         f"(registered: {', '.join(sorted({w.model for w in OFFICIAL.values() if w.model}))})")
    return next((w for w in candidates if w.imgsz == imgsz), candidates[0])


def fetch(weights: OfficialWeights, progress: bool = True) -> list[Path]:
    """Every file of ``weights`` in the cache (downloaded and verified when missing), in table order."""
    return [download(source_url(f), cached_path(weights, f), f.sha256, progress=progress) for f in weights.files]
