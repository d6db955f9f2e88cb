"""Ground-truth labels: COCO json, YOLO txt, Pascal VOC xml and Cartucho-style txt read into one form,
and the labels' class names matched to a model's.

Boxes are x1, y1, x2, y2 in original-image pixels. Every problem is a one-line ``LabelError`` that names
the file (and line) at fault, so the CLI can print it as is.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from ..errors import EdgeRuntimeError, first_line

FORMATS = ("coco", "yolo", "voc", "txt")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # in order of preference when two share a stem
# YOLO's names file often sits among the label files; it is never a label file itself
NAMES_FILE = "classes.txt"
YAML_FILES = ("data.yaml", "dataset.yaml")

TXT_LINE = "<class> <left> <top> <right> <bottom>"
YOLO_LINE = "<class index> <cx> <cy> <w> <h>"

# the VOC and COCO names of the same classes; matching compares them normalised (see _norm)
_ALIAS_PAIRS = (("tv", "tvmonitor"), ("motorcycle", "motorbike"), ("airplane", "aeroplane"), ("couch", "sofa"),
                ("dining table", "diningtable"), ("potted plant", "pottedplant"))
ALIASES: dict[str, str] = {a: b for a, b in _ALIAS_PAIRS} | {b: a for a, b in _ALIAS_PAIRS}


class LabelError(EdgeRuntimeError):
    """Ground-truth labels (or a class map) are missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Box:
    x1: float  # pixels in the original image; x2 = x + w as in COCO
    y1: float
    x2: float
    y2: float
    label: str  # the label file's class name
    ignore: bool = False  # VOC difficult, COCO iscrowd, txt "difficult": neither a miss nor a hit


@dataclass
class LabelledImage:
    path: Path  # the image file
    width: int | None  # None when the label format does not say; the caller fills it from the image
    height: int | None
    boxes: list[Box]


@dataclass
class LabelledSet:
    images: list[LabelledImage]  # sorted by path
    class_names: list[str]  # declared order (COCO by category id, YOLO names) or sorted (voc, txt)
    format: str  # one of FORMATS
    source: str  # the label path as given

    def box_counts(self) -> dict[str, int]:
        """Boxes per class name, ignored boxes included; every class of ``class_names`` is present."""
        counts = dict.fromkeys(self.class_names, 0)
        for image in self.images:
            for box in image.boxes:
                counts[box.label] = counts.get(box.label, 0) + 1
        return counts


# ----------------------------------------------------------------------------------------------- helpers


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: a BOM from Windows editors is not part of line 1
    except UnicodeDecodeError:
        raise LabelError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise LabelError(f"{path}: cannot be read ({first_line(exc)})") from None


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the file's non-blank lines."""
    return [(n, line.strip()) for n, line in enumerate(_read_text(path).splitlines(), 1) if line.strip()]


def _got(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # float() takes "nan" and "inf", which are no coordinates
        raise ValueError(text)
    return value


def _box(x1: float, y1: float, x2: float, y2: float, label: str, ignore: bool, where: str) -> Box:
    if x2 < x1 or y2 < y1:
        raise LabelError(f"{where}: box has x2 < x1 or y2 < y1 ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
    return Box(x1, y1, x2, y2, label, ignore)


def _label_files(folder: Path, suffix: str) -> list[Path]:
    """The folder's label files (sorted; not the YOLO names file); an error when there are none."""
    if not folder.is_dir():
        raise LabelError(f"{folder}: labels folder not found")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() == suffix and p.name.lower() != NAMES_FILE)
    if not files:
        raise LabelError(f"{folder}: no {suffix} label files in this folder")
    return files


def _images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise LabelError(f"{folder}: images folder not found")
    found: dict[str, Path] = {}
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTS)}
    for p in sorted(folder.iterdir(), key=lambda p: (rank.get(p.suffix.lower(), 99), p.name)):
        if p.suffix.lower() in rank and p.is_file():
            found.setdefault(p.stem, p)
    return found


def _no_image(label_file: Path, images: Path) -> LabelError:
    return LabelError(f"{label_file}: no image {label_file.stem}.* ({', '.join(IMAGE_EXTS)}) in {images}")


def _image_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise LabelError(f"{path}: OpenCV cannot read this image (its size is needed to scale the YOLO boxes)")
    return int(image.shape[1]), int(image.shape[0])


def _default_images(labels: Path) -> Path:
    """Where YOLO and txt labels' images usually are: ``labels/../images``, else among the labels."""
    sibling = labels.parent / "images"
    if sibling.is_dir():
        return sibling
    if labels.is_dir() and any(p.suffix.lower() in IMAGE_EXTS for p in labels.iterdir()):
        return labels
    raise LabelError(f"{labels}: no images folder next to the labels (looked for {sibling}); pass the images folder")


# ------------------------------------------------------------------------------------------------- formats


def _is_yolo_line(line: str) -> bool:
    tokens = line.split()
    if len(tokens) != 5 or not tokens[0].isascii() or not tokens[0].isdigit():
        return False
    try:
        return all(0.0 <= _float(t) <= 1.0 for t in tokens[1:])
    except ValueError:
        return False


def detect_format(data: Path) -> str:
    """The label format of a path: a .json file is COCO, a folder of .xml VOC, a folder of .txt YOLO when
    every line of its first non-empty file is ``<int> <4 floats in [0, 1]>``, else Cartucho txt."""
    data = Path(data)
    if data.is_file():
        if data.suffix.lower() == ".json":
            return "coco"
        raise LabelError(f"{data}: not a COCO .json file nor a folder of label files")
    if not data.is_dir():
        raise LabelError(f"{data}: no such labels file or folder")
    files = [p for p in data.iterdir() if p.is_file()]
    if any(p.suffix.lower() == ".xml" for p in files):
        return "voc"
    if not any(p.suffix.lower() == ".txt" and p.name.lower() != NAMES_FILE for p in files):
        raise LabelError(f"{data}: no label files (*.xml, *.txt) in this folder (a COCO file is given as the "
                         f".json itself)")
    for path in _label_files(data, ".txt"):
        lines = _lines(path)
        if lines:
            return "yolo" if all(_is_yolo_line(line) for _, line in lines) else "txt"
    # every label file is empty, so the content cannot tell: a names file says YOLO
    return "yolo" if _find_names(data) else "txt"


def read_labels(data: str | Path, images: str | Path | None = None, fmt: str = "auto",
                names: str | Path | None = None) -> LabelledSet:
    """Read ground truth of any of ``FORMATS`` (``fmt="auto"``: ``detect_format``).

    ``images``: the images folder (default: COCO the json's folder, VOC ``../JPEGImages``, YOLO and txt
    ``../images``). ``names``: YOLO's class names file.
    """
    path = Path(data)
    fmt = fmt.lower()
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise LabelError(f"unknown label format '{fmt}' (choose auto, {', '.join(FORMATS)})")
    if not path.exists():
        raise LabelError(f"{data}: no such labels file or folder")
    if names is not None and fmt != "yolo":
        raise LabelError(f"{names}: a names file is only read with YOLO labels ({data} is {fmt})")
    folder = Path(images) if images is not None else None
    if folder is not None and not folder.is_dir():
        raise LabelError(f"{images}: images folder not found")
    if fmt == "coco":
        result = read_coco(path, folder)
    elif fmt == "voc":
        result = read_voc(path, folder)
    elif fmt == "yolo":
        result = read_yolo(path, folder or _default_images(path), Path(names) if names is not None else None)
    else:
        result = read_txt(path, folder or _default_images(path))
    result.source = str(data)
    return result


def read_coco(path: Path, images: Path | None) -> LabelledSet:
    """A COCO detection json; image path = ``images / file_name`` (``images`` default: the json's folder)."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}: not valid JSON ({exc})") from None
    for key in ("annotations", "images", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise LabelError(f"{path}: not a COCO detection file (no '{key}' list)")

    categories: dict[int, str] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise LabelError(f"{path}: category {i}: needs an integer 'id' and a string 'name'")
        if cat["id"] in categories or cat["name"] in categories.values():
            raise LabelError(f"{path}: category {i}: id {cat['id']} or name '{cat['name']}' appears twice")
        categories[cat["id"]] = cat["name"]

    folder = path.parent if images is None else images
    by_id: dict[int, LabelledImage] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise LabelError(f"{path}: image {i}: needs an integer 'id' and a string 'file_name'")
        if img["id"] in by_id:
            raise LabelError(f"{path}: image {i}: id {img['id']} appears twice")
        size = [img.get(k) for k in ("width", "height")]
        if any(v is not None and (not _is_int(v) or v <= 0) for v in size):
            raise LabelError(f"{path}: image {i}: 'width' and 'height' must be positive integers")
        by_id[img["id"]] = LabelledImage(folder / img["file_name"], size[0], size[1], [])

    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {i}" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            raise LabelError(f"{where}: not a JSON object")
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        image = by_id.get(image_id) if _is_int(image_id) else None
        if image is None:
            raise LabelError(f"{where}: image_id {ann.get('image_id')!r} is not among the images")
        label = categories.get(category_id) if _is_int(category_id) else None
        if label is None:
            raise LabelError(f"{where}: category_id {ann.get('category_id')!r} is not among the categories")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise LabelError(f"{where}: bbox must be 4 numbers [x, y, w, h]")
        x, y, w, h = (float(v) for v in bbox)
        if w < 0 or h < 0:
            raise LabelError(f"{where}: bbox has a negative width or height ({w:g} x {h:g})")
        image.boxes.append(Box(x, y, x + w, y + h, label, bool(ann.get("iscrowd", 0))))

    return LabelledSet(sorted(by_id.values(), key=lambda im: im.path), [categories[k] for k in sorted(categories)],
                       "coco", str(path))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_yolo(labels: Path, images: Path, names: Path | None) -> LabelledSet:
    """YOLO txt: ``<image stem>.txt`` per image with ``<class index> <cx> <cy> <w> <h>`` in [0, 1].

    Class names from ``names`` (one per line, or a data.yaml), else found beside the labels. Images
    without a label file are background images (no boxes), as in YOLO training.
    """
    class_names, names_path = _yolo_names(labels, names)
    files = {p.stem: p for p in _label_files(labels, ".txt")}
    by_stem = _images_by_stem(images)
    for stem, path in files.items():
        if stem not in by_stem:
            raise _no_image(path, images)

    result = []
    for stem, image_path in by_stem.items():
        boxes: list[tuple[int, float, float, float, float, str]] = []
        label_file = files.get(stem)
        for n, line in (_lines(label_file) if label_file else []):
            where = f"{label_file}: line {n}"
            tokens = line.split()
            try:
                if len(tokens) != 5 or not tokens[0].isascii() or not tokens[0].isdigit():
                    raise ValueError(line)
                cx, cy, w, h = (_float(t) for t in tokens[1:])
            except ValueError:
                raise LabelError(f"{where}: expected '{YOLO_LINE}', got '{_got(line)}'") from None
            index = int(tokens[0])
            if index >= len(class_names):
                raise LabelError(f"{where}: class index {index} is out of range ({names_path} names "
                                 f"{len(class_names)} classes)")
            if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
                raise LabelError(f"{where}: coordinates must be normalised to [0, 1], got '{_got(line)}'")
            boxes.append((index, cx, cy, w, h, where))
        width = height = None
        if boxes:  # only boxes need the size; background images are not decoded twice
            width, height = _image_size(image_path)
        result.append(LabelledImage(image_path, width, height, [
            _box((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height,
                 class_names[index], False, where)
            for index, cx, cy, w, h, where in boxes]))
    return LabelledSet(sorted(result, key=lambda im: im.path), class_names, "yolo", str(labels))


def _find_names(labels: Path) -> Path | None:
    """A YOLO names file beside the labels: classes.txt, *.names, data.yaml or dataset.yaml."""
    for folder in (labels, labels.parent):
        candidates = [folder / NAMES_FILE, *sorted(folder.glob("*.names")), *(folder / n for n in YAML_FILES)]
        for path in candidates:
            if path.is_file():
                return path
    return None


def _yolo_names(labels: Path, names: Path | None) -> tuple[list[str], Path]:
    path = names if names is not None else _find_names(labels)
    if path is None:
        raise LabelError(f"{labels}: no YOLO class names found ({NAMES_FILE}, *.names or data.yaml in this folder "
                         f"or its parent); pass a names file with one class name per line")
    if not path.is_file():
        raise LabelError(f"{path}: names file not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        class_names = _yaml_names(path)
    else:
        class_names = [line for _, line in _lines(path)]
    if not class_names:
        raise LabelError(f"{path}: no class names in this file")
    twice = sorted({n for n in class_names if class_names.count(n) > 1})
    if twice:
        raise LabelError(f"{path}: class names appear twice: {', '.join(twice)}")
    return class_names, path


def _yaml_names(path: Path) -> list[str]:
    try:
        import yaml  # in the validate extra; a bare device install has no PyYAML
    except ImportError:
        raise LabelError(f"{path}: reading YAML needs PyYAML (pip install 'edge-runtime[validate]'); or pass a "
                         f"names file with one class name per line") from None
    try:
        data = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise LabelError(f"{path}: not valid YAML ({first_line(exc)})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):  # {0: person, 1: bicycle, ...}
        if sorted(names) != list(range(len(names))):
            raise LabelError(f"{path}: 'names' keys must be the class indices 0..{len(names) - 1}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list):
        raise LabelError(f"{path}: no 'names' list (or index -> name mapping) in this file")
    return [str(n).strip() for n in names]


def read_voc(annotations: Path, images: Path | None) -> LabelledSet:
    """Pascal VOC xml, one file per image (or a single .xml file); coordinates as written.

    ``images`` default: ``annotations/../JPEGImages`` when it exists, else the annotations folder.
    """
    files = [annotations] if annotations.is_file() else _label_files(annotations, ".xml")
    folder = annotations if annotations.is_dir() else annotations.parent
    if images is None:
        images = folder.parent / "JPEGImages" if (folder.parent / "JPEGImages").is_dir() else folder
    result = [_read_voc_file(path, images) for path in files]
    names = sorted({box.label for image in result for box in image.boxes})
    return LabelledSet(sorted(result, key=lambda im: im.path), names, "voc", str(annotations))


def _read_voc_file(path: Path, images: Path) -> LabelledImage:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise LabelError(f"{path}: not valid XML ({first_line(exc)})") from None
    except OSError as exc:
        raise LabelError(f"{path}: cannot be read ({first_line(exc)})") from None

    def text(parent: ET.Element, tag: str, where: str) -> str:
        value = parent.findtext(tag)
        if value is None or not value.strip():
            raise LabelError(f"{path}: {where}missing <{tag}>")
        return value.strip()

    def number(parent: ET.Element, tag: str, where: str) -> float:
        value = text(parent, tag, where)
        try:
            return _float(value)
        except ValueError:
            raise LabelError(f"{path}: {where}<{tag}> is not a number: '{_got(value)}'") from None

    filename = text(root, "filename", "")
    size = root.find("size")
    # VOC-like tools often omit <size> or write 0: the caller then takes it from the image
    width = int(number(size, "width", "<size> ")) if size is not None and size.findtext("width") else None
    height = int(number(size, "height", "<size> ")) if size is not None and size.findtext("height") else None
    boxes = []
    for i, obj in enumerate(root.findall("object"), 1):
        where = f"object {i}: "
        name = text(obj, "name", where)
        where = f"object {i} ({name}): "
        difficult = obj.findtext("difficult")
        ignore = bool(difficult and difficult.strip()) and number(obj, "difficult", where) != 0
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise LabelError(f"{path}: {where}missing <bndbox>")
        x1, y1, x2, y2 = (number(bndbox, tag, f"{where}<bndbox> ") for tag in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append(_box(x1, y1, x2, y2, name, ignore, f"{path}: {where.rstrip(': ')}"))
    return LabelledImage(images / filename, width or None, height or None, boxes)


def read_txt(labels: Path, images: Path) -> LabelledSet:
    """Cartucho mAP txt: ``<image stem>.txt`` per image with ``<class> <left> <top> <right> <bottom>
    [difficult]`` in pixels; the class name may contain spaces. Every label file needs its image."""
    files = _label_files(labels, ".txt")
    by_stem = _images_by_stem(images)
    result = []
    for path in files:
        if path.stem not in by_stem:
            raise _no_image(path, images)
        boxes = []
        for n, line in _lines(path):
            tokens = line.split()
            ignore = tokens[-1].lower() == "difficult"
            if ignore:
                tokens.pop()
            try:
                if len(tokens) < 5:
                    raise ValueError(line)
                x1, y1, x2, y2 = (_float(t) for t in tokens[-4:])
            except ValueError:
                raise LabelError(f"{path}: line {n}: expected '{TXT_LINE}', got '{_got(line)}'") from None
            boxes.append(_box(x1, y1, x2, y2, " ".join(tokens[:-4]), ignore, f"{path}: line {n}"))
        result.append(LabelledImage(by_stem[path.stem], None, None, boxes))
    names = sorted({box.label for image in result for box in image.boxes})
    return LabelledSet(sorted(result, key=lambda im: im.path), names, "txt", str(labels))


# ------------------------------------------------------------------------------------------ class matching


@dataclass
class ClassMatch:
    to_model: dict[str, int]  # label class name -> model class index (matched classes only)
    how: dict[str, str]  # label class name -> "name" | "alias" | "class-map" (matched classes only)
    unmatched: list[str]  # label classes the model does not predict; the caller leaves their boxes out
    model_names: list[str] = field(default_factory=list)  # to name the targets in describe()
    excluded: list[str] = field(default_factory=list)  # the part of unmatched the class map maps to null

    def describe(self, counts: dict[str, int] | None = None) -> str:
        """One line: how many label classes match and how, and which are left out (with box counts)."""
        def target(label: str) -> str:
            index = self.to_model[label]
            return self.model_names[index] if index < len(self.model_names) else f"#{index}"

        def listed(labels: list[str]) -> str:
            if counts is None:
                return ", ".join(labels)
            labels = sorted(labels, key=lambda n: (-counts.get(n, 0), n))
            return ", ".join(f"{n} ({_boxes(counts.get(n, 0))})" for n in labels)

        total = len(self.to_model) + len(self.unmatched)
        text = f"{len(self.to_model)} of {total} label classes match the model"
        details = []
        for title, pick in (("by alias", lambda n: self.how[n] == "alias"),
                            ("by the class map", lambda n: self.how[n] == "class-map"),
                            ("by spelling", lambda n: self.how[n] == "name" and target(n) != n)):
            pairs = [f"{n}->{target(n)}" for n in self.to_model if pick(n)]
            if pairs:
                details.append(f"{len(pairs)} {title}: {', '.join(pairs)}")
        if details:
            text += f" ({'; '.join(details)})"
        missing = [n for n in self.unmatched if n not in self.excluded]
        for labels, why in ((missing, ", the model has no such class"), (self.excluded, " by the class map")):
            if labels:
                boxes = f" ({_boxes(sum(counts.get(n, 0) for n in labels))})" if counts is not None else ""
                text += f"; left out{why}{boxes}: {listed(labels)}"
        return text


def _boxes(n: int) -> str:
    return f"{n} box" if n == 1 else f"{n} boxes"


def _norm(name: str) -> str:
    """"Dining_Table", "dining table" and "diningtable" are one name."""
    return re.sub(r"[\s_-]+", "", name).lower()


def load_class_map(path: str | Path) -> dict[str, str | None]:
    """A JSON object ``{"label class": "model class"}``; null leaves that label class out."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LabelError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise LabelError(f'{path}: a class map is a JSON object {{"label class": "model class" or null}}')
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise LabelError(f"{path}: '{key}' maps to {json.dumps(value)}; expected a model class name or null")
    return data


def match_classes(label_names: Sequence[str], model_names: Sequence[str],
                  class_map: dict[str, str | None] | None = None) -> ClassMatch:
    """Match each label class to a model class: the class map first, then the exact name, the normalised
    name (case, spaces, '_' and '-' ignored), then ``ALIASES`` (VOC tvmonitor = COCO tv, ...)."""
    exact: dict[str, int] = {}
    normal: dict[str, int] = {}
    for i, name in enumerate(model_names):  # the first of two look-alike model classes wins
        exact.setdefault(name, i)
        normal.setdefault(_norm(name), i)
    aliases = {_norm(a): _norm(b) for a, b in ALIASES.items()}
    class_map = class_map or {}
    match = ClassMatch({}, {}, [], list(model_names), [])
    for label in label_names:
        if label in class_map:
            wanted = class_map[label]
            if wanted is None:
                match.unmatched.append(label)
                match.excluded.append(label)
                continue
            index = exact.get(wanted, normal.get(_norm(wanted)))
            if index is None:
                shown = ", ".join(list(model_names)[:10]) + (", ..." if len(model_names) > 10 else "")
                raise LabelError(f"class map: '{label}' -> '{wanted}', but the model has no class '{wanted}' "
                                 f"(it has {len(model_names)}: {shown})")
            match.to_model[label], match.how[label] = index, "class-map"
        elif label in exact or _norm(label) in normal:
            match.to_model[label] = exact[label] if label in exact else normal[_norm(label)]
            match.how[label] = "name"
        elif aliases.get(_norm(label)) in normal:
            match.to_model[label], match.how[label] = normal[aliases[_norm(label)]], "alias"
        else:
            match.unmatched.append(label)
    return match
