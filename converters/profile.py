"""Static profile of a detector's ONNX graph: per layer its output shape, weights, MACs, activation
bytes and memory traffic; totals, the peak of live activations and a split by top-level module.

Built on :func:`converters.macs.count_nodes` (the counter the manifest's ``macs`` comes from), so the
profile and the exported package agree. Memory figures are estimates from shapes: every tensor is
assumed to be materialised once (a runtime that fuses Conv + activation writes less).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.errors import CheckpointError, ModelLoadError, first_line

from .macs import NodeCount, count_nodes

# the attribute our deploy wrappers keep the detector in: torch names its nodes "/model/backbone/..."
DEPLOY_ATTR = "model"
TOP_LEVEL = "(top level)"  # nodes of the deploy wrapper itself (decode tail), or of an unscoped graph
COCO_CLASS_COUNT = 80  # class count of a randomly initialised model without known class names


@dataclass(frozen=True)
class LayerProfile:
    name: str  # ONNX node name
    op_type: str
    module: str  # torch module path recovered from the name ("" when the name carries none)
    output_shape: tuple[int, ...]
    params: int
    macs: int
    activation_bytes: int  # outputs written
    memory_access_bytes: int  # inputs + weights read, outputs written

    @property
    def group(self) -> str:
        return self.module.split(".")[0] if self.module else TOP_LEVEL


@dataclass
class ModelProfile:
    source: str  # what was profiled: model name and size, or a file
    input_shape: tuple[int, ...]
    layers: list[LayerProfile]
    peak_activation_bytes: int  # most activation bytes alive at once, walking nodes in graph order
    notes: list[str] = field(default_factory=list)
    # parameters of the torch model, BatchNorm unfolded: what published figures count (the graph has
    # BatchNorm folded into convolution weights and biases: one value per channel instead of two)
    torch_params: int | None = None

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def activation_bytes(self) -> int:
        return sum(layer.activation_bytes for layer in self.layers)

    @property
    def memory_access_bytes(self) -> int:
        return sum(layer.memory_access_bytes for layer in self.layers)

    def groups(self) -> dict[str, dict[str, int]]:
        """Totals per top-level module (backbone, fpn, head, ...), in order of first appearance."""
        out: dict[str, dict[str, int]] = {}
        for layer in self.layers:
            g = out.setdefault(layer.group, {"layers": 0, "params": 0, "macs": 0, "activation_bytes": 0,
                                             "memory_access_bytes": 0})
            g["layers"] += 1
            for key in ("params", "macs", "activation_bytes", "memory_access_bytes"):
                g[key] += getattr(layer, key)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: totals, groups and every layer in graph order."""
        return {"source": self.source, "input_shape": list(self.input_shape), "notes": list(self.notes),
                "totals": {"params": self.params, "torch_params": self.torch_params, "macs": self.macs,
                           "flops": self.flops,
                           "activation_bytes": self.activation_bytes,
                           "peak_activation_bytes": self.peak_activation_bytes,
                           "memory_access_bytes": self.memory_access_bytes, "layers": len(self.layers)},
                "groups": self.groups(),
                "layers": [{**asdict(layer), "output_shape": list(layer.output_shape)} for layer in self.layers]}


def module_path(node_name: str, modules: set[str] | None = None) -> str:
    """Torch module path in an exported node name: '/model/backbone/stage2/stage2.0/branch_main/
    branch_main.0/Conv' -> 'backbone.stage2.0.branch_main.0' (the deploy wrapper's '/model' dropped).

    torch.onnx names a node by its scopes, each child scope repeating its parent's name
    ('stage2' then 'stage2.0'), then the op; names without scopes give ''. A module called again
    gets '_1', '_2' appended to its scope: with ``modules`` (the model's module paths) such a suffix
    is dropped where only the name without it is a module (a shared head over several levels), and a
    path that is no module but ends exactly one becomes that module.
    """
    if not node_name.startswith("/"):
        return ""
    parts: list[str] = []
    previous = None
    for scope in node_name[1:].split("/")[:-1]:
        parts.append(scope[len(previous) + 1:] if previous and scope.startswith(previous + ".") else scope)
        previous = scope
    if parts[:1] == [DEPLOY_ATTR]:
        parts = parts[1:]
    if modules is None:
        return ".".join(parts)
    resolved: list[str] = []
    for part in parts:
        base = re.sub(r"_\d+$", "", part)
        if ".".join([*resolved, part]) not in modules and ".".join([*resolved, base]) in modules:
            part = base
        resolved.append(part)
    path = ".".join(resolved)
    # a submodule the wrapper calls directly (NanoDet's head.distribution_project) is scoped at the top
    within = [m for m in modules if m.endswith("." + path)] if path and path not in modules else []
    return within[0] if len(within) == 1 else path


def _peak_live_bytes(rows: list[NodeCount], graph_outputs: set[str]) -> int:
    """Largest sum of live activation bytes while the nodes run in graph order: a tensor lives from its
    producer (graph inputs from the start) until its last reader; graph outputs live to the end."""
    size: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for i, row in enumerate(rows):
        for name, nbytes in (*zip(row.inputs, row.input_nbytes), *zip(row.outputs, row.output_nbytes)):
            size.setdefault(name, nbytes)
            last_use[name] = i
    produced = {name for row in rows for name in row.outputs}
    live = sum(nbytes for name, nbytes in size.items() if name not in produced)  # the graph inputs
    peak = live
    for i, row in enumerate(rows):
        live += row.output_bytes
        peak = max(peak, live)  # a node's inputs and outputs are all alive while it runs
        for name in {*row.inputs, *row.outputs}:
            if last_use[name] == i and name not in graph_outputs:
                live -= size[name]
    return peak


def profile_graph(graph: Any, source: str, notes: list[str] | None = None, modules: set[str] | None = None,
                  torch_params: int | None = None) -> ModelProfile:
    """Profile an onnx.ModelProto with static shapes; ``modules`` and ``torch_params`` come from the torch
    model it was exported from, when there is one (see :func:`module_path`, :class:`ModelProfile`)."""
    rows = count_nodes(graph)
    weights = {init.name for init in graph.graph.initializer}
    inputs = [i for i in graph.graph.input if i.name not in weights]
    input_shape = tuple(d.dim_value for d in inputs[0].type.tensor_type.shape.dim) if inputs else ()
    layers = [LayerProfile(name=r.name, op_type=r.op_type, module=module_path(r.name, modules),
                           output_shape=r.output_shape, params=r.params, macs=r.macs, activation_bytes=r.output_bytes,
                           memory_access_bytes=r.input_bytes + r.weight_bytes + r.output_bytes) for r in rows]
    peak = _peak_live_bytes(rows, {o.name for o in graph.graph.output})
    return ModelProfile(source=source, input_shape=input_shape, layers=layers, peak_activation_bytes=peak,
                        notes=list(notes or []), torch_params=torch_params)


def profile_onnx(path: str | Path) -> ModelProfile:
    """Profile an .onnx file (a package's model.onnx)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such ONNX file")
    try:
        graph = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors come in several types
        raise ModelLoadError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    return profile_graph(graph, str(path))


def profile_model(model: str, weights: str | Path | None = None, imgsz: int | None = None) -> ModelProfile:
    """Export ``model``'s deploy graph (as ``export`` does) to a temporary folder and profile it.

    Without ``weights`` the bundled checkpoint is used, else the model is randomly initialised: counts
    depend on shapes only, and the result says so in its notes.
    """
    import numpy as np
    import torch

    from .checkpoints import load_model
    from .export_onnx import write_onnx
    from .models import get_spec

    spec = get_spec(model)
    weights = weights or spec.weights
    imgsz = imgsz or spec.default_imgsz
    notes = []
    if weights is not None:
        net, _ = load_model(spec, weights)
    elif spec.load is not None:
        raise CheckpointError(f"{model}: its architecture comes from the .cfg beside its weights; pass --weights")
    else:
        classes = len(spec.class_names) if spec.class_names else COCO_CLASS_COUNT
        net = spec.build(classes)
        notes.append(f"random-initialised weights ({classes} classes, no --weights): params, MACs and memory "
                     f"depend on shapes only")
    # counted before export: write_onnx may fold BatchNorm into the convs in place (the graph has it folded)
    torch_params = sum(p.numel() for p in net.parameters())
    modules = {name for name, _ in net.named_modules() if name}
    dummy = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, imgsz, imgsz)).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        graph = write_onnx(spec.deploy(net).eval(), dummy, Path(tmp) / "model.onnx", spec.output_names)
    return profile_graph(graph, f"{spec.name} {imgsz}x{imgsz}", notes, modules, torch_params)


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f}"


def format_profile_table(profile: ModelProfile, top: int | None = None) -> str:
    """Plain-text table, largest layers (MACs, then memory traffic) first; ``top`` keeps that many;
    then the totals and the split by top-level module."""
    layers = sorted(profile.layers, key=lambda r: (-r.macs, -r.memory_access_bytes))
    shown = layers[:top] if top else layers
    total_macs = max(1, profile.macs)
    header = f"{'layer':<48} {'op':<10} {'output':<16} {'params':>9} {'MMACs':>8} {'%MACs':>6} " \
             f"{'act KiB':>9} {'mem KiB':>9}"
    lines = [(f"profile of {profile.source}, input {list(profile.input_shape)}; layers by MACs"
              + (f" (top {len(shown)} of {len(layers)})" if len(shown) < len(layers) else "")), header,
             "-" * len(header)]
    for r in shown:
        label = r.module or r.name
        label = label if len(label) <= 48 else "..." + label[-45:]
        lines.append(f"{label:<48} {r.op_type:<10} {'x'.join(map(str, r.output_shape)):<16} {r.params:>9,} "
                     f"{r.macs / 1e6:>8.2f} {100 * r.macs / total_macs:>6.1f} {_kib(r.activation_bytes):>9} "
                     f"{_kib(r.memory_access_bytes):>9}")
    torch_params = f" in the graph, {profile.torch_params / 1e6:.3f} M in the torch model (BatchNorm unfolded)" \
        if profile.torch_params else ""
    lines += ["", (f"params {profile.params / 1e6:.3f} M{torch_params}   MACs {profile.macs / 1e9:.3f} G   "
                   f"FLOPs {profile.flops / 1e9:.3f} G"),
              (f"activations {profile.activation_bytes / 2**20:.2f} MiB written, peak live "
               f"{profile.peak_activation_bytes / 2**20:.2f} MiB   memory access "
               f"{profile.memory_access_bytes / 2**20:.2f} MiB"),
              "", f"{'module':<16} {'layers':>6} {'params':>10} {'GMACs':>8} {'%MACs':>6} {'act MiB':>8}"]
    for name, g in profile.groups().items():
        lines.append(f"{name:<16} {g['layers']:>6} {g['params']:>10,} {g['macs'] / 1e9:>8.3f} "
                     f"{100 * g['macs'] / total_macs:>6.1f} {g['activation_bytes'] / 2**20:>8.2f}")
    lines += [f"note: {note}" for note in profile.notes]
    return "\n".join(lines)
