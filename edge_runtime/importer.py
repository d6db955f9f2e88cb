"""Import a foreign detector (.onnx or .tflite exported by its own project) as a package.

The model file is copied unchanged into a new package folder; its input and output specs are read
with the device backend that will run it (no onnx/torch needed), checked against the family's
layout (see edge_runtime/families/yolox.py, yolov5.py, yolov8.py, nanodet_plus.py) and written into
manifest.json with the family's default preprocessing, so `run`, `bench` and `validate` work as on
an exported package.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import edge_runtime

from .backends import BACKENDS, import_formats, open_backend
from .compare import judge
from .errors import EdgeRuntimeError, ModelLoadError, first_line
from .families import FAMILIES, importable_families, make_family
from .families.base import Family
from .fsutil import require_new_folder
from .manifest import RESIZE_MODES, Artifact, InputSpec, Manifest, sha256_file

_FLOAT_DTYPES = ("float32", "float", "tensor(float)")


# label maps of the TF Object Detection API start with a placeholder for the background class
_BACKGROUND_NAMES = ("???", "background", "__background__")


def read_classes(classes: str | Path, family: str = "") -> tuple[str, ...]:
    """"coco" -> the 80 COCO names (the 90 category-id slots TF models predict, for a family with
    ``coco_id_slots``: ssd); else a .txt file with one class name per line (a leading background
    placeholder such as '???' dropped)."""
    if str(classes) == "coco":
        from .coco import COCO_CLASSES, coco_category_slots

        slots = family in FAMILIES and FAMILIES[family].coco_id_slots
        return coco_category_slots() if slots else tuple(COCO_CLASSES)
    path = Path(classes)
    if not path.is_file():
        raise EdgeRuntimeError(f"{path}: class-names file not found (give 'coco' or a .txt, one name per line)")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if names and names[0].lower() in _BACKGROUND_NAMES:
        names = names[1:]
    if not names:
        raise EdgeRuntimeError(f"{path}: lists no class names")
    return names


def _input_layout(model: Path, shape: tuple, input_size: int | None) -> tuple[str, tuple[int, int, int, int]]:
    """NCHW or NHWC from where the 3-channel axis is, and the static (1, ., ., .) shape."""
    if len(shape) != 4:
        raise ModelLoadError(f"{model}: input has shape {list(shape)}; expected 4 dims (NCHW or NHWC image)")
    layout = "NCHW" if shape[1] == 3 else "NHWC" if shape[3] == 3 else None
    if layout is None:
        raise ModelLoadError(f"{model}: input shape {list(shape)} has no 3-channel axis (NCHW or NHWC expected)")
    hw = [shape[2], shape[3]] if layout == "NCHW" else [shape[1], shape[2]]
    for i, d in enumerate(hw):
        if not isinstance(d, int) or d <= 0:
            if input_size is None:
                raise ModelLoadError(f"{model}: input size is dynamic ({list(shape)}); give it with --imgsz")
            hw[i] = input_size
        elif input_size is not None and d != input_size:
            raise ModelLoadError(f"{model}: input is fixed at {hw[1]}x{hw[0]}; --imgsz {input_size} does not fit it")
    full = (1, 3, hw[0], hw[1]) if layout == "NCHW" else (1, hw[0], hw[1], 3)
    return layout, full


def import_model(model: str | Path, family: str, out: str | Path, classes: str | Path = "coco",
                 input_size: int | None = None, color: str | None = None,
                 mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
                 resize: str | None = None, score_threshold: float | None = None, nms_iou: float | None = None,
                 strides: list[int] | None = None, multi_label: bool | None = None) -> Manifest:
    """Copy ``model`` (.onnx or .tflite) into the new package ``out`` and write its manifest.

    ``family``: one of ``importable_families()``; its preprocessing and postprocess defaults (the
    family class's ``import_defaults``) apply unless ``color``/``mean``/``std``/``resize``/
    ``score_threshold``/``nms_iou``/``multi_label`` override them; ``strides`` overrides the
    decoder's (e.g. a 4-level head). ``input_size`` is needed only when the model's input is dynamic.
    Every problem is a one-line EdgeRuntimeError.
    """
    model, out = Path(model), Path(out)
    if not model.is_file():
        raise ModelLoadError(f"{model}: model file not found")
    fmt = import_formats().get(model.suffix.lower())
    if fmt is None:
        raise ModelLoadError(f"{model}: cannot import a {model.suffix or 'suffix-less'} file "
                             f"(give {' or '.join(import_formats())})")
    if family not in importable_families():
        raise EdgeRuntimeError(f"{model}: cannot import as family {family!r} "
                               f"(importable: {', '.join(importable_families())})")
    require_new_folder(out)
    defaults = FAMILIES[family].import_defaults
    color = color or defaults.color
    resize = resize or defaults.resize
    if color not in ("BGR", "RGB"):
        raise EdgeRuntimeError(f"{model}: color must be BGR or RGB, got {color!r}")
    if resize not in RESIZE_MODES:
        raise EdgeRuntimeError(f"{model}: resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    names = read_classes(classes, family)

    try:
        backend = open_backend(model, fmt, 1)
    except EdgeRuntimeError:
        raise
    except Exception as exc:  # noqa: BLE001 (the library's own parse error: quote its first line)
        raise ModelLoadError(f"{model}: {fmt} backend cannot load it ({first_line(exc)})") from None
    if len(backend.inputs) != 1:
        raise ModelLoadError(f"{model}: has {len(backend.inputs)} inputs; an image detector has one")
    tin = backend.inputs[0]
    # a backend that quantises inputs (TFLite) feeds a quantised input from float through its scale, or casts
    # an unscaled one
    fed_from_float = str(tin.dtype) in _FLOAT_DTYPES or (BACKENDS[fmt].quantizes_inputs
                                                          and str(tin.dtype) in ("uint8", "int8"))
    if not fed_from_float:
        raise ModelLoadError(f"{model}: input {tin.name!r} is {tin.dtype}; importable inputs are float32 "
                             f"(and uint8/int8 for TFLite)")
    layout, shape = _input_layout(model, tuple(tin.shape), input_size)

    decoder = dict(defaults.decoder)
    if strides is not None:
        decoder["strides"] = [int(s) for s in strides]
    postprocess = dict(defaults.postprocess)
    for key, value in (("score_threshold", score_threshold), ("nms_iou", nms_iou), ("multi_label", multi_label)):
        if value is not None:
            postprocess[key] = value
    inp = InputSpec(name=tin.name, shape=shape, layout=layout, dtype="float32", color=color,
                    mean=tuple(float(v) for v in (mean or defaults.mean)),
                    std=tuple(float(v) for v in (std or defaults.std)), resize=resize)
    draft = Manifest(root=out, family=family, name=model.stem, class_names=names, input=inp, decoder=decoder,
                     postprocess=postprocess, artifacts=(), produced_by={})
    decoder_family = make_family(draft)
    outputs = _pick_outputs(model, backend.outputs, decoder_family, classes, names)
    decoder.update(decoder_family.imported_decoder([_spec_shape(backend, o) for o in outputs]))

    out.mkdir(parents=True, exist_ok=True)
    target = out / BACKENDS[fmt].import_file[1]
    shutil.copyfile(model, target)
    digest = sha256_file(target)
    art = Artifact(file=target.name, format=fmt, precision="fp32", sha256=digest, outputs=outputs,
                   extra={"imported": True, "verification": judge("fp32", {"imported": True}).to_dict()})
    manifest = replace(draft, artifacts=(art,), produced_by={
        "edge_runtime": edge_runtime.__version__, "backend": backend.describe(),
        "imported_from": {"file": model.name, "sha256": digest, "format": fmt, "family": family,
                          "outputs": {o: _shape_text(_spec_shape(backend, o)) for o in outputs}}})
    manifest.save()
    return manifest


def _spec_shape(backend, name: str) -> tuple:
    return next(t.shape for t in backend.outputs if t.name == name)


def _shape_text(shape: tuple) -> list:
    return [d if isinstance(d, int) else str(d) for d in shape]


def _pick_outputs(model: Path, outputs: list, fam: Family, classes: str | Path,
                  names: tuple[str, ...]) -> tuple[str, ...]:
    """The outputs the family reads, in its role order; else a one-line error saying why the first
    does not fit (a class-count mismatch is blamed on the class list)."""
    picked = fam.match_outputs(outputs)
    if picked is not None:
        return picked
    first = outputs[0]
    shape = tuple(first.shape)
    implied = fam.classes_in(shape)
    if implied is not None and implied != len(names):  # the model fits the family; the class list does not
        src = "coco (the 80 COCO names)" if str(classes) == "coco" else str(classes)
        raise EdgeRuntimeError(f"{src}: lists {len(names)} class names; {model.name} output {first.name!r} "
                               f"(shape {_shape_text(shape)}) has {implied} classes for family {fam.manifest.family}")
    problem = fam.output_shape_problem(shape) or (
        f"fits, but the model's {len(outputs)} outputs do not make the {len(fam.output_roles)} family "
        f"{fam.manifest.family} reads ({', '.join(fam.output_roles)})")
    raise ModelLoadError(f"{model}: output {first.name!r} {problem}")
