"""YOLO-FastestV2's training loss, written after dog-qiuqiu/Yolo-FastestV2 ``utils/loss.py``.

Target assignment (as the official ``build_target``, YOLOv5-style): at each level a ground-truth box
goes to every anchor whose width and height ratios to it are both within ``ANCHOR_RATIO``, in its
own grid cell and in the two neighbouring cells its centre is closest to (offset 0.5).

Loss (as the official ``compute_loss``): CIoU on the decoded boxes (xy = 2*sigmoid - 0.5 around the
cell, wh = (2*sigmoid)^2 * anchor), BCE objectness over every anchor of every cell with target the
detached CIoU (clamped at 0) at the assigned ones (level weights 1.0 / 0.4), cross-entropy on the
class map (shared by the anchors of a cell) divided by the class count; weighted 3.2, 64 and 32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ANCHOR_RATIO = 2.0
LEVEL_BALANCE = (1.0, 0.4)
BOX_GAIN, OBJ_GAIN, CLS_GAIN = 3.2, 64.0, 32.0
_NEIGHBOURS = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32) * 0.5


def ciou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching (N, 4) cx, cy, w, h boxes."""
    p1, p2 = pred[:, :2] - pred[:, 2:] / 2, pred[:, :2] + pred[:, 2:] / 2
    t1, t2 = target[:, :2] - target[:, 2:] / 2, target[:, :2] + target[:, 2:] / 2
    inter = (torch.min(p2, t2) - torch.max(p1, t1)).clamp(0).prod(1)
    union = pred[:, 2:].prod(1) + target[:, 2:].prod(1) - inter + eps
    iou = inter / union
    hull = torch.max(p2, t2) - torch.min(p1, t1)
    diagonal = hull.pow(2).sum(1) + eps
    centre_dist = (pred[:, :2] - target[:, :2]).pow(2).sum(1)
    v = (4 / math.pi ** 2) * (torch.atan(target[:, 2] / (target[:, 3] + eps))
                              - torch.atan(pred[:, 2] / (pred[:, 3] + eps))).pow(2)
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - centre_dist / diagonal - alpha * v


def assign_targets(targets: torch.Tensor, anchors: torch.Tensor, grid_hw: tuple[int, int]
                   ) -> tuple[torch.Tensor, ...]:
    """Positive samples of one level.

    ``targets``: (T, 6) image index, class, cx, cy, w, h with coordinates in 0..1;
    ``anchors``: (A, 2) in grid cells. Returns image, anchor, row, column indices, the box in cell
    units relative to the cell (cx, cy, w, h) and the class, one entry per positive.
    """
    gh, gw = grid_hw
    num_anchors = anchors.shape[0]
    scale = torch.tensor([1, 1, gw, gh, gw, gh], dtype=targets.dtype)
    t = (targets * scale).repeat(num_anchors, 1, 1)  # (A, T, 6)
    anchor_ids = torch.arange(num_anchors).view(-1, 1).expand(num_anchors, targets.shape[0])
    ratio = t[..., 4:6] / anchors[:, None]
    keep = torch.max(ratio, 1 / ratio).max(2).values < ANCHOR_RATIO
    t, anchor_ids = t[keep], anchor_ids[keep]
    xy = t[:, 2:4]
    inverse = torch.tensor([gw, gh], dtype=xy.dtype) - xy
    left, up = ((xy % 1 < 0.5) & (xy > 1)).T
    right, down = ((inverse % 1 < 0.5) & (inverse > 1)).T
    use = torch.stack((torch.ones_like(left), left, up, right, down))  # (5, P)
    t, anchor_ids = t.repeat(5, 1, 1)[use], anchor_ids.repeat(5, 1)[use]
    offsets = _NEIGHBOURS[:, None].expand(5, len(xy), 2)[use]
    xy = t[:, 2:4]
    cell = (xy - offsets).long()
    col, row = cell[:, 0].clamp(0, gw - 1), cell[:, 1].clamp(0, gh - 1)
    box = torch.cat((xy - cell, t[:, 4:6]), 1)
    return t[:, 0].long(), anchor_ids, row, col, box, t[:, 1].long()


def yolo_fastest_v2_loss(outputs: tuple[torch.Tensor, ...], targets: torch.Tensor, anchors_px: torch.Tensor,
                         strides: tuple[int, ...]) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts for the raw model outputs (reg, obj, cls per level).

    ``anchors_px``: (levels, A, 2) anchor sizes in input pixels; ``targets`` as in ``assign_targets``.
    """
    box_loss = obj_loss = cls_loss = outputs[0].new_zeros(())
    for level, stride in enumerate(strides):
        reg, obj, cls = outputs[3 * level: 3 * level + 3]
        b, _, gh, gw = reg.shape
        num_anchors = obj.shape[1]
        reg = reg.view(b, num_anchors, 4, gh, gw).permute(0, 1, 3, 4, 2)  # (B, A, H, W, 4)
        img, anc, row, col, box, cls_ids = assign_targets(targets, anchors_px[level] / stride, (gh, gw))
        tobj = torch.zeros_like(obj)
        if len(img):
            p = reg[img, anc, row, col].sigmoid()
            pred_box = torch.cat((p[:, :2] * 2 - 0.5, (p[:, 2:] * 2) ** 2 * anchors_px[level][anc] / stride), 1)
            iou = ciou(pred_box, box)
            box_loss = box_loss + (1 - iou).mean()
            # objectness learns the box's quality, not just "object here": scores then rank
            # well-placed boxes first, which is what mAP over IoU .5:.95 rewards
            tobj[img, anc, row, col] = iou.detach().clamp(0)
            logits = cls.permute(0, 2, 3, 1)[img, row, col]
            cls_loss = cls_loss + F.cross_entropy(logits, cls_ids) / cls.shape[1]
        obj_loss = obj_loss + F.binary_cross_entropy_with_logits(obj, tobj) * LEVEL_BALANCE[level]
    parts = {"box": BOX_GAIN * box_loss, "obj": OBJ_GAIN * obj_loss, "cls": CLS_GAIN * cls_loss}
    total = parts["box"] + parts["obj"] + parts["cls"]
    return total, {k: float(v.detach()) for k, v in parts.items()}
