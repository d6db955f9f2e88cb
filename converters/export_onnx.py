"""Checkpoint -> FP32 ONNX (simplified) + manifest.json: the start of every package."""

from __future__ import annotations

import io
import json
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import edge_runtime
from edge_runtime.coco import COCO_CLASSES
from edge_runtime.compare import compare, judge
from edge_runtime.errors import CheckpointError, EdgeRuntimeError
from edge_runtime.fsutil import atomic_output
from edge_runtime.manifest import RESIZE_MODES, Artifact, Manifest, sha256_file
from edge_runtime.versions import package_version

from .checkpoints import load_model
from .compress.fuse import fuse_model
from .macs import count_macs
from .models import get_spec

DEFAULT_OPSET = 17
log = logging.getLogger(__name__)


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a text file (one per line) or a NanoDet yml (its ``class_names`` list)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: class-names file not found")
    if path.suffix in (".yml", ".yaml"):
        import yaml

        names = (yaml.safe_load(path.read_text()) or {}).get("class_names")
        if not isinstance(names, list):
            raise CheckpointError(f"{path}: has no 'class_names' list")
        return [str(n) for n in names]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def default_class_names(num_classes: int) -> list[str]:
    if num_classes == len(COCO_CLASSES):
        return list(COCO_CLASSES)
    log.warning("checkpoint has %d classes and no --classes file was given: naming them class_0..", num_classes)
    return [f"class_{i}" for i in range(num_classes)]


def export_package(model: str, weights: str | Path | None, out: str | Path, imgsz: int | None = None,
                   classes: str | Path | None = None, resize: str | None = None, opset: int = DEFAULT_OPSET,
                   simplify: bool = True, progress: Callable[[str], None] = lambda msg: None) -> Manifest:
    """Build ``model`` from ``weights``, export FP32 ONNX to ``out/model.onnx`` and write the manifest.

    The exported graph is checked against torch on a random input before the manifest is written;
    its max abs diff and cosine are recorded in the artifact entry. ``weights`` None: the model's
    bundled checkpoint (``demo-shapes``).
    """
    spec = get_spec(model)
    if weights is None:
        if spec.weights is None:
            raise CheckpointError(f"{model}: has no bundled weights; pass a checkpoint (--weights)")
        weights = spec.weights
    imgsz = imgsz or spec.default_imgsz
    if resize is not None and resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}")
    progress(f"loading {weights}")
    net, num_classes = load_model(spec, weights)
    names = read_class_names(classes) if classes else list(spec.class_names or default_class_names(num_classes))
    if len(names) != num_classes:
        raise CheckpointError(f"{classes}: lists {len(names)} class names, the checkpoint has {num_classes} classes")
    deploy = spec.deploy(net).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    dummy = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, imgsz, imgsz)).astype(np.float32))

    # the reference is the model as loaded, before write_onnx fuses it: parity covers the fusion too
    with torch.no_grad():
        reference = [t.numpy() for t in deploy(dummy)]
    import onnx
    import onnxruntime as ort

    # never through a link, never half-written, and moved in only when it agrees with torch
    with atomic_output(onnx_path) as tmp:
        graph = write_onnx(deploy, dummy, tmp, spec.output_names, opset, simplify, progress)
        progress("checking ONNX Runtime against torch")
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        parity = compare(reference, session.run(list(spec.output_names), {"input": dummy.numpy()}))
        verdict = judge("fp32", {"parity_vs_torch": parity})
        if not verdict.passed:
            raise EdgeRuntimeError(f"{onnx_path}: refused: {verdict.describe()}")

    manifest = Manifest(
        root=out, family=spec.family, name=spec.name, class_names=tuple(names),
        input=spec.input_spec(imgsz, resize),
        decoder=spec.decoder(net), postprocess=dict(spec.postprocess),
        artifacts=(Artifact(file=onnx_path.name, format="onnx", precision="fp32", sha256=sha256_file(onnx_path),
                            outputs=tuple(spec.output_names),
                            extra={"opset": opset, "simplified": simplify, "parity_vs_torch": parity,
                                   "verification": verdict.to_dict(), **_arithmetic(graph)}),),
        produced_by={"edge_runtime": edge_runtime.__version__, "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "onnxslim": package_version("onnxslim") if simplify else None,
                     "source_weights": Path(weights).name, "source_sha256": sha256_file(Path(weights))},
    )
    manifest.save()
    progress(f"wrote {manifest.path} ({json.dumps(parity)})")
    return manifest


def write_onnx(deploy: torch.nn.Module, dummy: torch.Tensor, path: Path, output_names: tuple[str, ...],
               opset: int = DEFAULT_OPSET, simplify: bool = True,
               progress: Callable[[str], None] = lambda msg: None, fuse: bool = True) -> Any:
    """torch.onnx.export of ``deploy`` traced on ``dummy`` (input named "input") to ``path``, simplified
    with onnxslim and checked; returns the onnx.ModelProto written (onnx is imported lazily).

    ``fuse``: first fold BatchNorm into convs and collapse RepVGG blocks, in place on ``deploy``
    (``converters.compress.fuse``; exact in eval mode).
    """
    if fuse:
        counts = fuse_model(deploy, dummy)
        progress(f"fused {counts['conv_bn']} conv+BN pairs, {counts['repvgg_blocks']} RepVGG blocks")
    progress(f"exporting ONNX (opset {opset})")
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(deploy, (dummy,), str(path), input_names=["input"],
                          output_names=list(output_names), opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    import onnx

    graph = onnx.load(str(path))
    if simplify:
        progress("simplifying with onnxslim")
        import onnxslim

        graph = onnxslim.slim(graph)
        onnx.save(graph, str(path))
    onnx.checker.check_model(graph)
    return graph


def _arithmetic(graph: Any) -> dict[str, int]:  # an onnx.ModelProto (onnx is imported lazily)
    """MACs and weight count of the exported graph, for bench's roofline line (read on the device)."""
    counted = count_macs(graph)
    return {"macs": counted["macs"], "params": counted["params"]}
