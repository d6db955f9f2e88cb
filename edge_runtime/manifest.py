"""The deployment package: a folder with ``manifest.json`` and model artifacts.

The manifest is the only contract between the host-side converters and the device: it says how
to feed the model (size, layout, colour order, mean/std, resize mode), how to read its outputs
(family and decoder parameters), and which artifacts exist with their checksums.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .backends import BACKENDS, option_keys
from .backends.base import MAX_INPUT_SIDE
from .budget import check_recorded_budget
from .compare import Verdict, judge
from .errors import ManifestError, ModelLoadError
from .fsutil import atomic_write_text

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
RESIZE_MODES = ("resize", "warp_affine", "warp_affine_keep_ratio", "letterbox", "letterbox_top_left")

# (dotted path, expected type) of every field the runtime reads.
_REQUIRED: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("format_version", int),
    ("model.family", str),
    ("model.name", str),
    ("model.class_names", list),
    ("input.name", str),
    ("input.shape", list),
    ("input.layout", str),
    ("input.dtype", str),
    ("input.color", str),
    ("input.mean", list),
    ("input.std", list),
    ("input.resize", str),
    ("decoder", dict),
    ("postprocess.score_threshold", (int, float)),
    ("postprocess.nms_iou", (int, float)),
    ("postprocess.max_detections", int),
    ("artifacts", list),
)
_ARTIFACT_REQUIRED = (("file", str), ("format", str), ("precision", str), ("sha256", str), ("outputs", list))

# A package is data from whoever made it: nothing in it may choose a native library (TFLite delegate),
# an execution provider, a profiler output path or a plugin config. Those come from the CLI or a target
# profile. Every key a backend reads as an option and every target key that becomes one (the backend
# registry's option_keys), plus the obvious containers.
BACKEND_KEYS = frozenset({"backend_options", "options", "devices", "providers", "library"}) | option_keys()
# Artifact keys naming a file of the package (besides ``file``), each with the key of its sha256: they must
# resolve inside it. An OpenVINO IR's .bin weights; a model compiled for an accelerator (the Edge TPU's
# _edgetpu.tflite), shipped and checksummed with the artifact it was compiled from.
_FILE_KEYS = {"weights_file": "weights_sha256", "compiled_file": "compiled_sha256"}
# Bounds that no real detector reaches but that keep a hostile manifest from asking for absurd buffers.
MAX_CLASSES = 10_000
MAX_DETECTIONS = 100_000
MAX_REG_MAX = 256


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, int, int, int]
    layout: str  # "NCHW" or "NHWC"
    dtype: str
    color: str  # "BGR" or "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str

    @property
    def size_hw(self) -> tuple[int, int]:
        return (self.shape[2], self.shape[3]) if self.layout == "NCHW" else (self.shape[1], self.shape[2])


@dataclass(frozen=True)
class Artifact:
    file: str
    format: str
    precision: str
    sha256: str
    outputs: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.format}-{self.precision}"

    @property
    def verdict(self) -> Verdict:
        """Its check against FP32: as recorded by convert/export/import (``verification``), else
        judged from the figures an older manifest recorded."""
        if "verification" in self.extra:
            return Verdict.from_dict(self.extra["verification"])
        return judge(self.precision, self.extra)

    @property
    def verified(self) -> bool:
        """Passed its check: only verified artifacts are chosen by auto, demo, bench and bundles."""
        return self.verdict.passed


@dataclass(frozen=True)
class Manifest:
    root: Path
    family: str
    name: str
    class_names: tuple[str, ...]
    input: InputSpec
    decoder: dict[str, Any]
    postprocess: dict[str, float]
    artifacts: tuple[Artifact, ...]
    produced_by: dict[str, Any]
    # the INT8 accuracy budget convert applied (``max_drop`` as --max-drop reads it, null: none checked)
    int8_budget: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    def artifact(self, format: str | None = None, precision: str | None = None) -> Artifact:
        """The first artifact matching ``format``/``precision`` (None matches any)."""
        for art in self.artifacts:
            if (format in (None, art.format)) and (precision in (None, art.precision)):
                return art
        have = ", ".join(a.key for a in self.artifacts) or "none"
        raise ManifestError(f"{self.path}: no artifact with format={format or 'any'} "
                            f"precision={precision or 'any'} (package has: {have})")

    def input_for(self, art: Artifact) -> InputSpec:
        """The input as ``art`` takes it: an artifact may override name, shape, layout and dtype
        (a TFLite graph is NHWC, for example); colour, mean/std and resize are the model's."""
        override = art.extra.get("input", {})
        unknown = set(override) - {"name", "shape", "layout", "dtype"}
        if unknown:
            raise ManifestError(f"{self.path}: artifact {art.file} overrides unknown input fields {sorted(unknown)}")
        if "shape" in override:
            override = {**override, "shape": tuple(int(v) for v in override["shape"])}
        return replace(self.input, **override)

    def artifact_files(self, art: Artifact) -> list[Path]:
        """Every file of ``art``: the model, plus e.g. an OpenVINO IR's .bin weights."""
        return [self.root / art.file, *(self.root / art.extra[key] for key in _FILE_KEYS if key in art.extra)]

    def artifact_mb(self, art: Artifact) -> float:
        return sum(p.stat().st_size for p in self.artifact_files(art) if p.exists()) / 2**20

    def with_artifact(self, art: Artifact) -> "Manifest":
        """A copy with ``art`` added, replacing any artifact with the same format and precision."""
        kept = tuple(a for a in self.artifacts if a.key != art.key)
        return replace(self, artifacts=kept + (art,))

    def artifact_path(self, art: Artifact, verify: bool = True) -> Path:
        """Absolute path of ``art``; with ``verify`` its sha256 must match the manifest."""
        path = self.root / art.file
        digests = [art.sha256, *(art.extra.get(sha) for key, sha in _FILE_KEYS.items() if key in art.extra)]
        files = list(zip(self.artifact_files(art), digests))
        for file, digest in files:
            if not file.is_file():
                raise ModelLoadError(f"{file}: artifact listed in the manifest is missing")
            if verify and digest is not None and sha256_file(file) != digest:
                raise ModelLoadError(f"{file}: checksum mismatch with manifest.json "
                                     f"(file is truncated, corrupt or was replaced)")
        return path

    def to_dict(self) -> dict[str, Any]:
        inp = asdict(self.input)
        inp["shape"], inp["mean"], inp["std"] = list(inp["shape"]), list(inp["mean"]), list(inp["std"])
        return {
            "format_version": FORMAT_VERSION,
            "model": {"family": self.family, "name": self.name, "num_classes": len(self.class_names),
                      "class_names": list(self.class_names)},
            "input": inp,
            "decoder": self.decoder,
            "postprocess": self.postprocess,
            "artifacts": [{"file": a.file, "format": a.format, "precision": a.precision, "sha256": a.sha256,
                           "outputs": list(a.outputs), **a.extra} for a in self.artifacts],
            "produced_by": self.produced_by,
            **({"int8_budget": self.int8_budget} if self.int8_budget is not None else {}),
        }

    def save(self) -> Path:
        """Write ``manifest.json`` atomically; a manifest that is a symbolic link is refused, not followed."""
        self.root.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.path, json.dumps(self.to_dict(), indent=2) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def _check(where: str, data: dict[str, Any], required: tuple[tuple[str, Any], ...]) -> None:
    for dotted, kind in required:
        try:
            value = _lookup(data, dotted)
        except KeyError:
            raise ManifestError(f"{where}: missing field '{dotted}'") from None
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ManifestError(f"{where}: field '{dotted}' has the wrong type ({type(value).__name__})")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_shape(where: str, field: str, shape: Any) -> None:
    if not isinstance(shape, list) or len(shape) != 4 or not all(_int(v, 1, MAX_INPUT_SIDE) for v in shape):
        raise ManifestError(f"{where}: {field} must be 4 positive integers of at most {MAX_INPUT_SIDE}, "
                            f"got {_short(shape)}")


def _short(value: Any, limit: int = 80) -> str:
    """``value`` as quoted in an error: a hostile manifest's huge list must not become a huge line."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _non_finite(node: Any) -> bool:
    """True when a NaN or an infinity hides anywhere in ``node`` (json.loads accepts NaN and Infinity)."""
    if isinstance(node, float):
        return not math.isfinite(node)
    if isinstance(node, dict):
        return any(_non_finite(v) for v in node.values())
    if isinstance(node, list):
        return any(_non_finite(v) for v in node)
    return False


def _check_numbers(where: str, data: dict[str, Any]) -> None:
    """Every number the runtime reads (input, classes, postprocess, each family's decoder fields) is finite and
    in range, so a damaged or hostile manifest fails here in one line, not as a NaN box or a huge allocation."""
    if _non_finite([data["model"], data["input"], data["decoder"], data["postprocess"]]):
        raise ManifestError(f"{where}: model, input, decoder or postprocess holds NaN or Infinity "
                            f"(every number must be finite)")
    model, pp, dec = data["model"], data["postprocess"], data["decoder"]
    names = model["class_names"]
    if not names or len(names) > MAX_CLASSES or not all(isinstance(n, str) for n in names):
        raise ManifestError(f"{where}: model.class_names must be 1 to {MAX_CLASSES} strings")
    if "num_classes" in model and model["num_classes"] != len(names):
        raise ManifestError(f"{where}: model.num_classes {model['num_classes']} does not match the "
                            f"{len(names)} entries of model.class_names")
    for key in ("score_threshold", "nms_iou"):
        if not 0.0 <= pp[key] <= 1.0:
            raise ManifestError(f"{where}: postprocess.{key} must be in [0, 1], got {pp[key]}")
    if not _int(pp["max_detections"], 1, MAX_DETECTIONS):
        raise ManifestError(f"{where}: postprocess.max_detections must be 1 to {MAX_DETECTIONS}, "
                            f"got {pp['max_detections']}")
    # decoder fields of the families in families/*.py, checked where present (each family says what it needs)
    checks = (("strides", lambda v: isinstance(v, list) and v and all(_int(s, 1, MAX_INPUT_SIDE) for s in v),
               f"a non-empty list of positive integers of at most {MAX_INPUT_SIDE}"),
              ("reg_max", lambda v: _int(v, 0, MAX_REG_MAX), f"an integer from 0 to {MAX_REG_MAX}"),
              ("anchors_per_cell", lambda v: _int(v, 1, 64), "an integer from 1 to 64"),
              ("anchor_num", lambda v: _int(v, 1, 64), "an integer from 1 to 64"),
              ("max_detections", lambda v: _int(v, 0, MAX_DETECTIONS), f"an integer from 0 to {MAX_DETECTIONS}"),
              ("center_offset", lambda v: _number(v) and -1.0 <= v <= 1.0, "a number in [-1, 1]"),
              ("anchors", lambda v: _flat_numbers(v, positive=True), "a list of positive numbers (or of pairs)"),
              ("scale_x_y", lambda v: _flat_numbers(v, positive=True), "a list of positive numbers"),
              ("masks", lambda v: isinstance(v, list) and all(isinstance(m, list) and all(_int(i, 0, 1000) for i in m)
                                                              for m in v), "a list of lists of anchor indices"))
    for key, ok, wanted in checks:
        if key in dec and not ok(dec[key]):
            raise ManifestError(f"{where}: decoder.{key} must be {wanted}, got {_short(dec[key])}")


def _flat_numbers(value: Any, positive: bool) -> bool:
    """A non-empty list of finite numbers, possibly nested one level (anchor pairs)."""
    if not isinstance(value, list) or not value:
        return False
    flat = [x for v in value for x in (v if isinstance(v, list) else [v])]
    return all(_number(x) and (x > 0 or not positive) for x in flat)


def _check_no_backend_keys(where: str, node: dict[str, Any], what: str) -> None:
    bad = sorted(BACKEND_KEYS & set(node))
    if bad:
        raise ManifestError(f"{where}: {what} sets {bad[0]!r}; a package cannot choose backend libraries, "
                            f"providers, profiler paths or configs (use the CLI options or --target)")


def _check_weights_file(where: str, art: dict[str, Any]) -> None:
    """The weights the backend will load beside the model file must be the ``weights_file`` the manifest
    checksums: another name would be checked while the loaded one is not."""
    cls = BACKENDS.get(art["format"])
    if cls is None or not isinstance(art["file"], str):  # a format this version cannot run is never loaded
        return
    want, have = cls.weights_file(art["file"]), art.get("weights_file")
    if want is None:
        if have is not None:
            raise ManifestError(f"{where}: artifact {art['file']!r} lists weights_file {have!r}, but its "
                                f"{art['format']} backend loads no weights file")
        return
    if have != want:
        raise ManifestError(f"{where}: artifact {art['file']!r} must list its weights as weights_file {want!r} "
                            f"with weights_sha256 (has {have!r})")


def _check_package_path(where: str, root: Path, art_name: str, key: str, rel: Any) -> None:
    """``rel`` names a file inside the package: relative, no '..', and no symbolic link on the way (a link
    could point a checksum-verified load, a bundle or a write at any file of the device)."""
    if not isinstance(rel, str) or not rel or "\x00" in rel or "\\" in rel:
        raise ManifestError(f"{where}: artifact {art_name} {key} {rel!r} is not a plain relative file name")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts:
        raise ManifestError(f"{where}: artifact {art_name} {key} {rel!r} points outside the package "
                            f"(absolute paths and '..' are refused)")
    node = root
    for part in parts:
        node = node / part
        if node.is_symlink():
            raise ManifestError(f"{where}: artifact {art_name} {key} {rel!r}: {node} is a symbolic link "
                                f"(package files must be regular files inside the package)")


def parse_manifest(data: dict[str, Any], root: Path) -> Manifest:
    where = str(root / MANIFEST_NAME)
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    _check(where, data, _REQUIRED)
    if data["format_version"] > FORMAT_VERSION:
        raise ManifestError(f"{where}: format_version {data['format_version']} is newer than this "
                            f"edge-runtime understands ({FORMAT_VERSION}); upgrade edge-runtime")
    _check_no_backend_keys(where, data, "the manifest")
    inp = data["input"]
    for key, kind in (("shape", int), ("mean", (int, float)), ("std", (int, float))):
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in inp[key]):
            raise ManifestError(f"{where}: input.{key} must hold numbers, got {inp[key]}")
    _check_numbers(where, data)
    if "int8_budget" in data:
        check_recorded_budget(where, data["int8_budget"])
    if len(inp["shape"]) != 4 or inp["layout"] not in ("NCHW", "NHWC"):
        raise ManifestError(f"{where}: input.shape must have 4 dims and input.layout be NCHW or NHWC")
    _check_shape(where, "input.shape", inp["shape"])
    if inp["shape"][1 if inp["layout"] == "NCHW" else 3] != 3:
        raise ManifestError(f"{where}: input.shape {inp['shape']} has no 3-channel axis where layout "
                            f"{inp['layout']} puts it")
    if any(v <= 0 for v in inp["std"]):
        raise ManifestError(f"{where}: input.std must be positive, got {inp['std']}")
    if inp["resize"] not in RESIZE_MODES:
        raise ManifestError(f"{where}: input.resize {inp['resize']!r} is not one of {', '.join(RESIZE_MODES)}")
    if inp["color"] not in ("BGR", "RGB") or len(inp["mean"]) != 3 or len(inp["std"]) != 3:
        raise ManifestError(f"{where}: input.color must be BGR or RGB and mean/std have 3 values")
    if not data["artifacts"]:
        raise ManifestError(f"{where}: 'artifacts' is empty")
    artifacts = []
    for i, art in enumerate(data["artifacts"]):
        _check(f"{where} artifacts[{i}]", art, _ARTIFACT_REQUIRED)
        _check_no_backend_keys(where, art, f"artifact {art['file']!r}")
        for key in ("file", *_FILE_KEYS):
            if key in art:
                _check_package_path(where, root, repr(art["file"]), key, art[key])
        for key, sha in _FILE_KEYS.items():
            if key not in art:
                continue
            if not isinstance(art.get(sha), str):  # it would be loaded unchecked
                raise ManifestError(f"{where}: artifact {art['file']!r} lists {key} {art[key]!r} without {sha}")
            if Path(art[key]).parent != Path(art["file"]).parent:  # backends open these beside the model file
                raise ManifestError(f"{where}: artifact {art['file']!r} lists {key} {art[key]!r} outside its "
                                    f"folder")
        _check_weights_file(where, art)
        if isinstance(art.get("input"), dict) and "shape" in art["input"]:
            _check_shape(where, f"artifact {art['file']!r} input.shape", art["input"]["shape"])
        known = {k for k, _ in _ARTIFACT_REQUIRED}
        artifacts.append(Artifact(file=art["file"], format=art["format"], precision=art["precision"],
                                  sha256=art["sha256"], outputs=tuple(art["outputs"]),
                                  extra={k: v for k, v in art.items() if k not in known}))
    return Manifest(
        root=root,
        family=data["model"]["family"],
        name=data["model"]["name"],
        class_names=tuple(data["model"]["class_names"]),
        input=InputSpec(name=inp["name"], shape=tuple(int(v) for v in inp["shape"]), layout=inp["layout"],
                        dtype=inp["dtype"], color=inp["color"], mean=tuple(float(v) for v in inp["mean"]),
                        std=tuple(float(v) for v in inp["std"]), resize=inp["resize"]),
        decoder=data["decoder"],
        postprocess=dict(data["postprocess"]),
        artifacts=tuple(artifacts),
        produced_by=dict(data.get("produced_by", {})),
        int8_budget=data.get("int8_budget"),
    )


def load_manifest(package: str | Path) -> Manifest:
    """Read and validate ``<package>/manifest.json`` (``package`` may also be the json itself)."""
    package = Path(package)
    root = package.parent if package.name == MANIFEST_NAME else package
    path = root / MANIFEST_NAME
    if not root.exists():
        raise ManifestError(f"{root}: no such package folder")
    if path.is_symlink():  # a package is data: its manifest is a file of its own, not a pointer elsewhere
        raise ManifestError(f"{path}: is a symbolic link; a package's manifest must be a plain file")
    if not path.is_file():
        raise ManifestError(f"{path}: not found (is {root} a package made by 'edge-runtime export'?)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from None
    return parse_manifest(data, root)
