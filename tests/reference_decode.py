"""Independent torch reference post-processing for exported packages (test helper, needs torch).

Public API::

    torch_reference_detections(model_name: str, package_dir: str | Path, weights: str | Path,
                               image: np.ndarray, score_threshold: float | None = None
                               ) -> list[tuple[np.ndarray, float, int]]

``model_name`` is a converters model name ("nanodet-plus-m", "nanodet-m", "yolo-fastestv2");
``package_dir`` the exported package (only its manifest's input size and score threshold are read);
``weights`` the checkpoint the package was exported from; ``image`` an HxWx3 uint8 BGR array;
``score_threshold`` overrides the manifest's ``postprocess.score_threshold``.
Returns ``[(box_xyxy float64 (4,), score, class_id), ...]`` in original-image pixels, best first.

Nothing here reuses ``edge_runtime.families``, ``edge_runtime.nms`` or ``edge_runtime.preprocess``:
preprocessing, priors/grids, box decoding, NMS and the mapping back to the image are written
again from the official code (RangiLyu/nanodet 1.x ``NanoDetPlusHead.get_bboxes`` /
``multiclass_nms`` / ``warp_boxes``; dog-qiuqiu/Yolo-FastestV2 ``test.py`` / ``handel_preds`` /
``non_max_suppression``), so the runtime can be checked against it.

Also exported: ``preprocess_nanodet``, ``preprocess_yolo_fastestv2``, ``greedy_nms``,
``match_detections`` and ``load_torch_model`` (cached).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)
# the official configs' data.val.keep_ratio
NANODET_KEEP_RATIO = {"nanodet-plus-m": False, "nanodet-plus-m-1.5x": False, "nanodet-m": True}
NANODET_NMS_IOU = 0.6  # official multiclass_nms cfg
YOLO_FASTESTV2_NMS_IOU = 0.4  # official test.py
MAX_DETECTIONS = 100
# official Yolo-FastestV2 data/coco.data anchors (w, h pairs; first three for stride 16)
YOLO_FASTESTV2_ANCHORS = [12.64, 19.39, 37.88, 51.48, 55.71, 138.31,
                          126.91, 78.23, 131.57, 214.55, 279.92, 258.87]


@functools.lru_cache(maxsize=8)
def load_torch_model(model_name: str, weights: str) -> torch.nn.Module:
    from converters.checkpoints import load_model
    from converters.models import get_spec

    model, _ = load_model(get_spec(model_name), weights)
    return model.eval()


def _read_manifest(package_dir: str | Path) -> dict:
    return json.loads((Path(package_dir) / "manifest.json").read_text())


# ----------------------------------------------------------------------------------------- NMS

def _box_iou(box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of one xyxy box against (N, 4) boxes, areas without +1 (as torchvision.ops.nms)."""
    x1 = torch.maximum(box[0], boxes[:, 0])
    y1 = torch.maximum(box[1], boxes[:, 1])
    x2 = torch.minimum(box[2], boxes[:, 2])
    y2 = torch.minimum(box[3], boxes[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Plain greedy NMS (torchvision.ops.nms semantics): indices kept, by descending score."""
    order = torch.argsort(scores, descending=True, stable=True)
    keep = []
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    for pos, i in enumerate(order.tolist()):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1:]
        rest = rest[~suppressed[rest]]
        if len(rest):
            suppressed[rest[_box_iou(boxes[i], boxes[rest]) > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.long)


def classwise_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                  iou_threshold: float) -> torch.Tensor:
    """NMS within each class; returns kept indices sorted by descending score."""
    keep = []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[greedy_nms(boxes[idx], scores[idx], iou_threshold)])
    if not keep:
        return torch.zeros(0, dtype=torch.long)
    keep = torch.cat(keep)
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]


# ------------------------------------------------------------------------------------ NanoDet

def nanodet_warp_matrix(raw_wh: tuple[int, int], dst_wh: tuple[int, int], keep_ratio: bool) -> np.ndarray:
    """3x3 matrix of the official ``get_resize_matrix`` (original pixels -> input pixels)."""
    (r_w, r_h), (d_w, d_h) = raw_wh, dst_wh
    rs = np.eye(3)
    if keep_ratio:
        c = np.eye(3)
        c[0, 2], c[1, 2] = -r_w / 2, -r_h / 2
        ratio = d_h / r_h if r_w / r_h < d_w / d_h else d_w / r_w
        rs[0, 0] *= ratio
        rs[1, 1] *= ratio
        t = np.eye(3)
        t[0, 2], t[1, 2] = 0.5 * d_w, 0.5 * d_h
        return t @ rs @ c
    rs[0, 0] *= d_w / r_w
    rs[1, 1] *= d_h / r_h
    return rs


def preprocess_nanodet(image: np.ndarray, size_wh: tuple[int, int], keep_ratio: bool
                       ) -> tuple[torch.Tensor, np.ndarray]:
    """Official NanoDet val pipeline: warp (bilinear, black border), (img - mean) / std, BGR, NCHW."""
    h, w = image.shape[:2]
    m = nanodet_warp_matrix((w, h), size_wh, keep_ratio)
    warped = cv2.warpPerspective(image, m, dsize=tuple(size_wh))
    x = (warped.astype(np.float32) - NANODET_MEAN) / NANODET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None], m


def _nanodet_detections(model_name: str, model: torch.nn.Module, manifest: dict, image: np.ndarray,
                        threshold: float):
    _, _, in_h, in_w = manifest["input"]["shape"]
    x, warp = preprocess_nanodet(image, (in_w, in_h), NANODET_KEEP_RATIO[model_name])
    with torch.no_grad():
        raw = model(x)  # per level (1, C + 4*(reg_max+1), H, W)
    num_classes, reg_max = model.head.num_classes, model.head.reg_max
    all_boxes, all_scores = [], []
    for stride, level in zip(model.strides, raw):
        _, _, fh, fw = level.shape
        flat = level[0].flatten(1).t()  # (H*W, C + 32), row-major
        cls_logits, reg = flat[:, :num_classes], flat[:, num_classes:]
        # center priors: x = col * stride, y = row * stride (NanoDet 1.x, no half-cell offset)
        ys, xs = torch.meshgrid(torch.arange(fh, dtype=torch.float32) * stride,
                                torch.arange(fw, dtype=torch.float32) * stride, indexing="ij")
        cx, cy = xs.flatten(), ys.flatten()
        # GFL integral: softmax over reg_max + 1 bins, expectation of 0..reg_max
        prob = F.softmax(reg.reshape(-1, 4, reg_max + 1), dim=-1)
        dist = (prob * torch.arange(reg_max + 1, dtype=torch.float32)).sum(-1) * stride
        # distance2bbox with max_shape = input (h, w)
        x1 = (cx - dist[:, 0]).clamp(0, in_w)
        y1 = (cy - dist[:, 1]).clamp(0, in_h)
        x2 = (cx + dist[:, 2]).clamp(0, in_w)
        y2 = (cy + dist[:, 3]).clamp(0, in_h)
        all_boxes.append(torch.stack([x1, y1, x2, y2], -1))
        all_scores.append(cls_logits.sigmoid())
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    # multi-label: every (box, class) pair above the threshold is a candidate
    idx, labels = torch.nonzero(scores > threshold, as_tuple=True)
    cand_boxes, cand_scores = boxes[idx], scores[idx, labels]
    keep = classwise_nms(cand_boxes, cand_scores, labels, NANODET_NMS_IOU)[:MAX_DETECTIONS]
    kept = cand_boxes[keep].double().numpy()
    # warp_boxes with the inverse matrix, then clip to the original image
    inv = np.linalg.inv(warp)
    n = len(kept)
    out = np.zeros((n, 4))
    if n:
        xy = np.ones((n * 4, 3))
        xy[:, :2] = kept[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
        xy = xy @ inv.T
        xy = (xy[:, :2] / xy[:, 2:3]).reshape(n, 8)
        xs8, ys8 = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
        out = np.stack([xs8.min(1), ys8.min(1), xs8.max(1), ys8.max(1)], 1)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, image.shape[1])
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, image.shape[0])
    return [(out[i], float(cand_scores[k]), int(labels[k])) for i, k in enumerate(keep.tolist())]


# ------------------------------------------------------------------------------ YOLO-FastestV2

def preprocess_yolo_fastestv2(image: np.ndarray, size_wh: tuple[int, int]) -> torch.Tensor:
    """Official test.py: cv2.resize INTER_LINEAR, BGR as read, float / 255, NCHW."""
    res = cv2.resize(image, tuple(size_wh), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(res.transpose(2, 0, 1).copy())[None].float() / 255.0


def _yolo_fastestv2_detections(model: torch.nn.Module, manifest: dict, image: np.ndarray, threshold: float):
    _, _, in_h, in_w = manifest["input"]["shape"]
    x = preprocess_yolo_fastestv2(image, (in_w, in_h))
    with torch.no_grad():
        preds = model(x)
    a = model.anchor_num
    anchors = torch.tensor(YOLO_FASTESTV2_ANCHORS, dtype=torch.float32).reshape(len(preds) // 3, a, 2)
    rows = []
    for i in range(len(preds) // 3):  # handel_preds
        r, o, c = (p[0] for p in preds[i * 3:i * 3 + 3])
        r = r.permute(1, 2, 0).reshape(r.shape[1], r.shape[2], a, -1)
        o = o.permute(1, 2, 0).reshape(o.shape[1], o.shape[2], a, -1)
        c = c.permute(1, 2, 0).reshape(c.shape[1], c.shape[2], 1, c.shape[0]).repeat(1, 1, a, 1)
        h, w = r.shape[:2]
        hv, wv = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        grid = torch.stack((wv, hv), 2).repeat(1, 1, a).reshape(h, w, a, -1)
        stride = in_h / h
        box = torch.zeros(h, w, a, 5 + c.shape[-1])
        box[..., :2] = ((r[..., :2].sigmoid() * 2.0 - 0.5) + grid) * stride
        box[..., 2:4] = (r[..., 2:4].sigmoid() * 2) ** 2 * anchors[i]
        box[..., 4] = o[..., 0].sigmoid()
        box[..., 5:] = F.softmax(c, dim=3)
        rows.append(box.reshape(-1, box.shape[-1]))
    pred = torch.cat(rows)
    # non_max_suppression: conf = obj * cls, best class per box, class-wise NMS
    cls_scores = pred[:, 5:] * pred[:, 4:5]
    xyxy = torch.cat([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], 1)
    conf, labels = cls_scores.max(1)
    mask = conf > threshold
    xyxy, conf, labels = xyxy[mask], conf[mask], labels[mask]
    keep = classwise_nms(xyxy, conf, labels, YOLO_FASTESTV2_NMS_IOU)[:MAX_DETECTIONS]
    oh, ow = image.shape[:2]
    scale = np.array([ow / in_w, oh / in_h, ow / in_w, oh / in_h])
    out = []
    for k in keep.tolist():
        b = xyxy[k].double().numpy() * scale
        b[[0, 2]] = b[[0, 2]].clip(0, ow)
        b[[1, 3]] = b[[1, 3]].clip(0, oh)
        out.append((b, float(conf[k]), int(labels[k])))
    return out


# ------------------------------------------------------------------------------------ public

def torch_reference_detections(model_name: str, package_dir: str | Path, weights: str | Path,
                               image: np.ndarray, score_threshold: float | None = None
                               ) -> list[tuple[np.ndarray, float, int]]:
    """Detections of the torch model on ``image`` with the official post-processing (see module doc)."""
    model = load_torch_model(model_name, str(weights))
    manifest = _read_manifest(package_dir)
    if score_threshold is None:
        score_threshold = float(manifest["postprocess"]["score_threshold"])
    if model_name.startswith("nanodet"):
        return _nanodet_detections(model_name, model, manifest, image, score_threshold)
    if model_name == "yolo-fastestv2":
        return _yolo_fastestv2_detections(model, manifest, image, score_threshold)
    raise ValueError(f"no reference decoder for {model_name!r}")


def match_detections(reference, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                     ) -> list[tuple[int, int]]:
    """Pair each reference detection with the unused runtime detection of the same class whose
    box is closest (max abs coordinate difference). Returns [(ref_index, runtime_index), ...]."""
    used: set[int] = set()
    pairs = []
    for i, (box, _, cid) in enumerate(reference):
        best, best_d = None, np.inf
        for j in range(len(scores)):
            if j in used or int(class_ids[j]) != cid:
                continue
            d = float(np.abs(np.asarray(boxes[j], np.float64) - box).max())
            if d < best_d:
                best, best_d = j, d
        if best is not None:
            used.add(best)
            pairs.append((i, best))
    return pairs
