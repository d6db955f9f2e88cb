"""Darknet ``.cfg`` + ``.weights`` -> a torch module, for YOLO-Fastest v1.1 / 1.1-XL (YOLOv3-style heads).

Our own parser, no darknet or OpenCV code: it knows the layer types those cfgs use ([net],
[convolutional] incl. grouped/depthwise, [shortcut], [route] incl. groups/group_id, [upsample],
[maxpool], [dropout], [yolo]) and refuses anything else with a one-line error naming the file.

The module's forward returns the inputs of the [yolo] layers (the raw head conv outputs, NCHW,
(B, A*(5+C), H, W) each, in cfg order); decoding is the runtime's job (family ``yolov3``).
``YoloV3Deploy`` is the export wrapper that puts the score rule in the graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge_runtime.errors import CheckpointError

# darknet's batchnorm adds .000001 to the variance (normalize_cpu / fuse_conv_batchnorm)
DARKNET_BN_EPS = 1e-6
SUPPORTED = ("net", "convolutional", "shortcut", "route", "upsample", "maxpool", "dropout", "yolo")
ACTIVATIONS = ("linear", "leaky", "relu", "relu6", "logistic", "mish", "swish")


@dataclass(frozen=True)
class Section:
    """One ``[type]`` block of a cfg with its ``key=value`` options (values kept as strings)."""

    type: str
    options: dict[str, str]
    line: int  # 1-based line of the ``[type]`` header, for error messages

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    def int(self, key: str, default: int) -> int:
        return int(self.options.get(key, default))

    def float(self, key: str, default: float) -> float:
        return float(self.options.get(key, default))

    def ints(self, key: str) -> list[int]:
        return [int(v) for v in self.options.get(key, "").split(",") if v.strip()]


def parse_cfg(path: str | Path) -> list[Section]:
    """The cfg's sections in file order; ``[net]`` first. Unknown layer types are an error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: darknet cfg not found (expected beside the .weights, same stem)")
    sections: list[Section] = []
    for no, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[([A-Za-z_]+)\]", line)
            kind = m.group(1).lower() if m else line
            if kind not in SUPPORTED:
                raise CheckpointError(f"{path}: line {no}: unsupported layer type {line} "
                                      f"(supported: {', '.join(SUPPORTED)})")
            sections.append(Section(kind, {}, no))
        elif "=" in line and sections:
            key, value = line.split("=", 1)
            sections[-1].options[key.strip()] = value.strip()
        else:
            raise CheckpointError(f"{path}: line {no}: cannot parse {line[:60]!r}")
    if not sections or sections[0].type != "net":
        raise CheckpointError(f"{path}: a darknet cfg must start with a [net] section")
    if not any(s.type == "yolo" for s in sections):
        raise CheckpointError(f"{path}: has no [yolo] layer")
    return sections


class _Act(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "leaky":
            return F.leaky_relu(x, 0.1)  # darknet's leaky slope
        if self.kind == "relu":
            return F.relu(x)
        if self.kind == "relu6":
            return F.relu6(x)
        if self.kind == "logistic":
            return torch.sigmoid(x)
        if self.kind == "mish":
            return F.mish(x)
        if self.kind == "swish":
            return F.silu(x)
        return x


class _Conv(nn.Module):
    """conv (no bias when batch-normalised) -> BatchNorm2d (darknet eps) -> activation."""

    def __init__(self, cin: int, s: Section) -> None:
        super().__init__()
        k, stride, groups = s.int("size", 1), s.int("stride", 1), s.int("groups", 1)
        pad = k // 2 if s.int("pad", 0) else s.int("padding", 0)
        self.bn = bool(s.int("batch_normalize", 0))
        self.conv = nn.Conv2d(cin, s.int("filters", 1), k, stride, pad, groups=groups, bias=not self.bn)
        self.norm = nn.BatchNorm2d(self.conv.out_channels, eps=DARKNET_BN_EPS) if self.bn else nn.Identity()
        self.act = _Act(s.get("activation", "logistic"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class _MaxPool(nn.Module):
    """Darknet maxpool: window start ``i*stride - padding//2``, outside values never win."""

    def __init__(self, size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.size, self.stride, self.padding = size, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo = self.padding // 2
        x = F.pad(x, (lo, self.padding - lo, lo, self.padding - lo), value=float("-inf"))
        return F.max_pool2d(x, self.size, self.stride)


class _Upsample(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(self.stride), mode="nearest")


@dataclass(frozen=True)
class YoloHead:
    """What the decoder needs from one [yolo] layer; ``anchors`` are (w, h) in net-input pixels."""

    mask: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]  # all of the cfg's anchors; ``mask`` picks this level's
    classes: int
    scale_x_y: float
    stride: int


class DarknetNet(nn.Module):
    """A darknet cfg as a torch module. ``forward(x (B,3,H,W))`` -> [(B, A*(5+C), h, w) per [yolo]]."""

    def __init__(self, sections: list[Section], cfg_path: str | Path = "<cfg>") -> None:
        super().__init__()
        net = sections[0]
        self.width, self.height = net.int("width", 416), net.int("height", 416)
        cin = net.int("channels", 3)
        self.layers = nn.ModuleList()
        self.kinds: list[str] = []
        self.refs: list[list[int]] = []  # absolute indices a route/shortcut reads
        self.route_groups: list[tuple[int, int]] = []
        self.heads: list[YoloHead] = []
        self._head_inputs: list[int] = []
        chans: list[int] = []
        strides: list[int] = []  # cumulative down-sampling of each layer's output
        c, st = cin, 1
        for i, s in enumerate(sections[1:]):
            where = f"{cfg_path}: line {s.line}: [{s.type}]"
            refs: list[int] = []
            groups = (1, 0)
            if s.type == "convolutional":
                act = s.get("activation", "logistic")
                if act not in ACTIVATIONS:
                    raise CheckpointError(f"{where}: unsupported activation {act!r} (supported: {', '.join(ACTIVATIONS)})")
                if c % s.int("groups", 1):
                    raise CheckpointError(f"{where}: groups={s.int('groups', 1)} does not divide {c} input channels")
                layer: nn.Module = _Conv(c, s)
                c, st = s.int("filters", 1), st * s.int("stride", 1)
            elif s.type == "maxpool":
                size = s.int("size", 1)
                stride = s.int("stride", 1)
                layer = _MaxPool(size, stride, s.int("padding", size - 1))
                st *= stride
            elif s.type == "upsample":
                stride = s.int("stride", 2)
                layer, st = _Upsample(stride), max(st // stride, 1)
            elif s.type in ("dropout", "yolo"):
                layer = nn.Identity()  # dropout is off at inference; [yolo] decodes in the runtime
                if s.type == "yolo":
                    mask = s.ints("mask")
                    flat = [float(v) for v in s.get("anchors", "").split(",") if v.strip()]
                    anchors = tuple(zip(flat[0::2], flat[1::2]))
                    classes = s.int("classes", 80)
                    if not mask or max(mask) >= len(anchors) or c != len(mask) * (5 + classes):
                        raise CheckpointError(f"{where}: mask/anchors/classes do not match the "
                                              f"{c} channels of the layer before it")
                    self.heads.append(YoloHead(tuple(mask), anchors, classes, s.float("scale_x_y", 1.0), st))
                    self._head_inputs.append(i - 1)
            elif s.type in ("shortcut", "route"):
                key = "from" if s.type == "shortcut" else "layers"
                refs = [r if r >= 0 else i + r for r in s.ints(key)]
                if not refs or any(not 0 <= r < i for r in refs):
                    raise CheckpointError(f"{where}: {key}={s.get(key)} refers to a layer that does not exist")
                layer = _Act(s.get("activation", "linear")) if s.type == "shortcut" else nn.Identity()
                if s.type == "shortcut":
                    if s.get("activation", "linear") not in ACTIVATIONS:
                        raise CheckpointError(f"{where}: unsupported activation {s.get('activation')!r}")
                    if chans[refs[0]] != c or len(refs) != 1:
                        raise CheckpointError(f"{where}: only a single same-shape 'from' is supported")
                else:
                    groups = (s.int("groups", 1), s.int("group_id", 0))
                    c, st = sum(chans[r] // groups[0] for r in refs), strides[refs[0]]
            else:  # parse_cfg refuses unknown types; kept so a new SUPPORTED entry cannot slip through
                raise CheckpointError(f"{where}: unsupported layer type")
            self.layers.append(layer)
            self.kinds.append(s.type)
            self.refs.append(refs)
            self.route_groups.append(groups)
            chans.append(c)
            strides.append(st)

    @property
    def num_classes(self) -> int:
        return self.heads[0].classes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs: list[torch.Tensor] = []
        for layer, kind, refs, (g, gid) in zip(self.layers, self.kinds, self.refs, self.route_groups):
            if kind == "route":
                parts = [outs[r] for r in refs]
                if g > 1:  # darknet's route groups: keep the group_id-th channel slice of each input
                    parts = [p.chunk(g, dim=1)[gid] for p in parts]
                x = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            elif kind == "shortcut":
                x = layer(x + outs[refs[0]])
            else:
                x = layer(x)
            outs.append(x)
        return [outs[i] for i in self._head_inputs]


def read_darknet_weights(net: DarknetNet, path: str | Path) -> None:
    """Fill ``net``'s convolutions from a darknet ``.weights`` file, in cfg order.

    Layout: int32 major, minor, revision; ``seen`` as int64 when major*10+minor >= 2 (else int32);
    then float32 per conv: with batch_normalize [bias, scale, running mean, running var] (n each),
    without [bias] (n); then the kernel (n, c/groups, k, k). The file must hold exactly that many.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 16:
        raise CheckpointError(f"{path}: too short for a darknet .weights header ({len(data)} bytes)")
    major, minor, _ = np.frombuffer(data, "<i4", 3)
    header = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16
    if (len(data) - header) % 4:
        raise CheckpointError(f"{path}: {len(data) - header} bytes after the header is not a float32 count")
    values = np.frombuffer(data, "<f4", offset=header)
    convs = [m for m in net.layers if isinstance(m, _Conv)]
    need = sum(sum(p.numel() for p in m.parameters()) + (2 * m.conv.out_channels if m.bn else 0) for m in convs)
    if values.size != need:
        raise CheckpointError(f"{path}: holds {values.size} weights after the header, its cfg needs {need} "
                              f"({'truncated' if values.size < need else 'extra data'}, or a .weights for another cfg)")
    pos = 0

    def take(t: torch.Tensor) -> None:
        nonlocal pos
        t.data.copy_(torch.from_numpy(values[pos:pos + t.numel()].copy()).view_as(t))
        pos += t.numel()

    with torch.no_grad():
        for m in convs:
            if m.bn:
                for t in (m.norm.bias, m.norm.weight, m.norm.running_mean, m.norm.running_var):
                    take(t)
            else:
                take(m.conv.bias)
            take(m.conv.weight)


def load_darknet(weights: str | Path, cfg: str | Path | None = None) -> tuple[DarknetNet, int]:
    """``weights`` (.weights) + its cfg (default: same stem + ``.cfg`` beside it) -> (model in eval, classes)."""
    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such weights file")
    if weights.suffix != ".weights":
        raise CheckpointError(f"{weights}: expected a darknet .weights file (with its .cfg beside it)")
    cfg = Path(cfg) if cfg else weights.with_suffix(".cfg")
    net = DarknetNet(parse_cfg(cfg), cfg)
    read_darknet_weights(net, weights)
    return net.eval(), net.num_classes


class YoloV3Deploy(nn.Module):
    """Export wrapper: the score rule in the graph, box terms kept apart from scores.

    Outputs (N runs over [yolo] layers in cfg order, then rows, columns, anchors of the mask):
      ``scores``    (B, N, C) sigmoid(obj) * sigmoid(class logits)  (darknet / OpenCV rule)
      ``box_terms`` (B, N, 4) sigmoid(tx), sigmoid(ty), sigmoid(tw), sigmoid(th)
    Both stay in 0..1, so INT8 quantisation never shares a scale with pixel-sized values. tw and th
    go through a sigmoid too (the decoder recovers exp(tw) = s / (1 - s)): left raw, the TFLite
    quantiser tied their narrow range (about +-1.7) to the head convolution's output through the
    slice and concatenation after it, clipping the objectness and class logits (every score >= 0.023).
    """

    def __init__(self, model: DarknetNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, boxes = [], []
        for out, head in zip(self.model(x), self.model.heads):
            b, _, h, w = out.shape
            a, nc = len(head.mask), head.classes
            # darknet channel = anchor * (5 + C) + entry  ->  (B, H, W, A, 5 + C)
            t = out.reshape(b, a, 5 + nc, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 5 + nc)
            scores.append(t[..., 4:5].sigmoid() * t[..., 5:].sigmoid())
            boxes.append(t[..., 0:4].sigmoid())
        return torch.cat(scores, 1), torch.cat(boxes, 1)


def yolov3_decoder_params(model: DarknetNet) -> dict:
    """The manifest ``decoder`` block for family ``yolov3`` (read by edge_runtime/families/yolov3.py)."""
    heads = model.heads
    if any(h.anchors != heads[0].anchors for h in heads):  # the manifest holds one anchor list + masks
        raise CheckpointError("darknet cfg: its [yolo] layers list different anchors; not supported")
    return {"anchors": [list(a) for a in heads[0].anchors], "masks": [list(h.mask) for h in heads],
            "strides": [h.stride for h in heads], "scale_x_y": [h.scale_x_y for h in heads],
            "score_in_graph": "sigmoid(obj)*sigmoid(cls)", "box_in_graph": "sigmoid(txtytwth)"}
