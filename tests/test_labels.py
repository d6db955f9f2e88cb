"""Ground-truth readers (COCO, YOLO, VOC, Cartucho txt) and class-name matching, on real files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fixture_path

from edge_runtime.coco import COCO_CLASSES
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.evaluation.labels import (
    ALIASES,
    FORMATS,
    Box,
    LabelError,
    detect_format,
    load_class_map,
    match_classes,
    read_coco,
    read_labels,
    read_txt,
    read_voc,
    read_yolo,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))
    return path


def error(call: Callable[[], object], *parts: str) -> str:
    """The LabelError message of ``call()``: one line, holding every one of ``parts``."""
    with pytest.raises(LabelError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message
    return message


# ------------------------------------------------------------------------------------------------- COCO


def coco_dict() -> dict:
    return {
        "images": [{"id": 7, "file_name": "b.jpg", "width": 640, "height": 480},
                   {"id": 3, "file_name": "a.jpg", "width": 320, "height": 240},
                   {"id": 9, "file_name": "empty.jpg"}],
        # declared out of id order: class_names follow the ids
        "categories": [{"id": 5, "name": "dog"}, {"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 3, "category_id": 1, "bbox": [10, 20, 30, 40]},
            {"id": 2, "image_id": 3, "category_id": 5, "bbox": [0.5, 1.5, 2, 3], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [100, 100, 50, 25], "iscrowd": 0},
        ],
    }


def test_read_coco(tmp_path):
    path = write(tmp_path / "ann" / "coco.json", json.dumps(coco_dict()))
    labels = read_coco(path, None)
    assert labels.format == "coco"
    assert labels.class_names == ["person", "dog"]
    assert [im.path for im in labels.images] == [tmp_path / "ann" / n for n in ("a.jpg", "b.jpg", "empty.jpg")]
    a, b, empty = labels.images
    assert (a.width, a.height, b.width, b.height, empty.width, empty.height) == (320, 240, 640, 480, None, None)
    assert a.boxes == [Box(10, 20, 40, 60, "person"), Box(0.5, 1.5, 2.5, 4.5, "dog", ignore=True)]
    assert b.boxes == [Box(100, 100, 150, 125, "dog")]
    assert empty.boxes == []  # an image without annotations has no objects, and is kept
    assert labels.box_counts() == {"person": 1, "dog": 2}

    images = tmp_path / "imgs"
    images.mkdir()
    by_read_labels = read_labels(str(path), images)
    assert by_read_labels.images[0].path == images / "a.jpg"
    assert by_read_labels.source == str(path)


@pytest.mark.parametrize(("change", "expected"), [
    (lambda d: d.pop("annotations"), "not a COCO detection file (no 'annotations' list)"),
    (lambda d: d.update(images={}), "not a COCO detection file (no 'images' list)"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]),
     "annotation 1 (id 2): bbox must be 4 numbers [x, y, w, h]"),
    (lambda d: d["annotations"][1].update(bbox=[1, 2, "3", 4]), "annotation 1 (id 2): bbox must be 4 numbers"),
    (lambda d: d["annotations"][2].update(bbox=[1, 2, -3, 4]), "annotation 2 (id 3): bbox has a negative width"),
    (lambda d: d["annotations"][0].update(image_id=42), "annotation 0 (id 1): image_id 42 is not among the images"),
    (lambda d: d["annotations"][0].update(category_id=2),
     "annotation 0 (id 1): category_id 2 is not among the categories"),
    (lambda d: d["categories"][0].pop("name"), "category 0: needs an integer 'id' and a string 'name'"),
    (lambda d: d["images"][0].pop("file_name"), "image 0: needs an integer 'id' and a string 'file_name'"),
])
def test_coco_errors(tmp_path, change, expected):
    data = coco_dict()
    change(data)
    path = write(tmp_path / "coco.json", json.dumps(data))
    error(lambda: read_coco(path, None), f"{path}: {expected}")


def test_coco_not_json(tmp_path):
    path = write(tmp_path / "coco.json", '{"images": [,]}')
    error(lambda: read_labels(path), f"{path}: not valid JSON (Expecting value: line 1 column 13")
    listed = write(tmp_path / "list.json", "[1, 2]")
    error(lambda: read_labels(listed), f"{listed}: not a COCO detection file")


# ------------------------------------------------------------------------------------------------- YOLO


def yolo_set(root: Path) -> tuple[Path, Path]:
    """labels/ + images/: a.png 200x100 with two boxes, b.jpg 50x40 with one, c.png without a label file."""
    images, labels = root / "images", root / "labels"
    image(images / "a.png", 200, 100)
    image(images / "b.jpg", 50, 40)
    image(images / "c.png", 10, 10)
    write(labels / "classes.txt", "cat\ndog\n\nbird\n")
    write(labels / "a.txt", "0 0.5 0.5 0.5 0.2\n\n2 0.25 0.75 0.1 0.5\n")
    write(labels / "b.txt", "1 0.5 0.5 1 1\n")
    return labels, images


def test_read_yolo(tmp_path):
    labels, images = yolo_set(tmp_path)
    result = read_yolo(labels, images, None)
    assert result.format == "yolo"
    assert result.class_names == ["cat", "dog", "bird"]  # classes.txt order, the blank line skipped
    assert [im.path.name for im in result.images] == ["a.png", "b.jpg", "c.png"]
    a, b, c = result.images
    assert (a.width, a.height, b.width, b.height) == (200, 100, 50, 40)
    assert a.boxes == [Box(50, 40, 150, 60, "cat"), Box(40, 50, 60, 100, "bird")]
    assert b.boxes == [Box(0, 0, 50, 40, "dog")]
    assert c.boxes == []  # background image: no label file, no objects
    assert result.box_counts() == {"cat": 1, "dog": 1, "bird": 1}


def test_yolo_names_sources(tmp_path):
    labels, images = yolo_set(tmp_path)
    (labels / "classes.txt").unlink()
    error(lambda: read_yolo(labels, images, None), f"{labels}: no YOLO class names found", "pass a names file")

    write(tmp_path / "obj.names", "a\nb\nc\n")  # *.names in the labels' parent
    assert read_yolo(labels, images, None).class_names == ["a", "b", "c"]

    names = write(tmp_path / "mine.txt", "x\ny\nz\n")  # given explicitly: wins over the found one
    assert read_labels(labels, images, fmt="yolo", names=names).class_names == ["x", "y", "z"]

    pytest.importorskip("yaml", reason="data.yaml names need PyYAML")
    (tmp_path / "obj.names").unlink()
    write(tmp_path / "data.yaml", "path: .\nnames:\n  0: p\n  1: q\n  2: r\n")
    assert read_yolo(labels, images, None).class_names == ["p", "q", "r"]


@pytest.mark.parametrize(("line", "expected"), [
    ("0 0.5 0.5 0.2", "line 2: expected '<class index> <cx> <cy> <w> <h>', got '0 0.5 0.5 0.2'"),
    ("0 0.5 x 0.2 0.2", "line 2: expected '<class index> <cx> <cy> <w> <h>', got '0 0.5 x 0.2 0.2'"),
    ("1.0 0.5 0.5 0.2 0.2", "line 2: expected '<class index>"),
    ("3 0.5 0.5 0.2 0.2", "line 2: class index 3 is out of range"),
    ("0 0.5 0.5 20 0.2", "line 2: coordinates must be normalised to [0, 1]"),
])
def test_yolo_errors(tmp_path, line, expected):
    labels, images = yolo_set(tmp_path)
    write(labels / "a.txt", f"0 0.5 0.5 0.5 0.2\n{line}\n")
    error(lambda: read_yolo(labels, images, None), f"{labels / 'a.txt'}: {expected}")


def test_yolo_file_errors(tmp_path):
    labels, images = yolo_set(tmp_path)
    missing = tmp_path / "nope.names"
    error(lambda: read_yolo(labels, images, missing), f"{missing}: names file not found")
    binary = tmp_path / "bad.names"
    binary.write_bytes(b"\xff\xfe\x00cat")
    error(lambda: read_yolo(labels, images, binary), f"{binary}: not a UTF-8 text file")
    write(labels / "orphan.txt", "0 0.5 0.5 0.1 0.1\n")
    error(lambda: read_yolo(labels, images, None), f"{labels / 'orphan.txt'}: no image orphan.*")
    (labels / "orphan.txt").unlink()
    (images / "a.png").write_bytes(b"not an image")
    error(lambda: read_yolo(labels, images, None), f"{images / 'a.png'}: OpenCV cannot read this image")


# -------------------------------------------------------------------------------------------------- VOC


def voc_xml(filename: str, objects: str, size: str = "<size><width>64</width><height>48</height></size>") -> str:
    return f"<annotation><folder>VOC</folder><filename>{filename}</filename>{size}{objects}</annotation>"


def voc_object(name: str, box: tuple, difficult: str | None = None) -> str:
    tags = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    extra = f"<difficult>{difficult}</difficult>" if difficult is not None else ""
    return f"<object><name>{name}</name><pose>Left</pose>{extra}<bndbox>{tags}</bndbox></object>"


def test_read_voc(tmp_path):
    ann = tmp_path / "VOC" / "Annotations"
    (tmp_path / "VOC" / "JPEGImages").mkdir(parents=True)
    write(ann / "2.xml", voc_xml("b.jpg", voc_object("tvmonitor", (1, 2, 3, 4), "1")
                                 + voc_object("chair", (10.5, 20, 30.25, 40), "0")))
    write(ann / "1.xml", voc_xml("a.jpg", voc_object("person", (5, 6, 7, 8)), size=""))
    result = read_voc(ann, None)
    assert result.format == "voc"
    assert result.class_names == ["chair", "person", "tvmonitor"]  # sorted
    a, b = result.images
    assert (a.path, b.path) == (tmp_path / "VOC" / "JPEGImages" / "a.jpg", tmp_path / "VOC" / "JPEGImages" / "b.jpg")
    assert (a.width, a.height, b.width, b.height) == (None, None, 64, 48)  # no <size>: the caller decodes
    assert a.boxes == [Box(5, 6, 7, 8, "person")]
    assert b.boxes == [Box(1, 2, 3, 4, "tvmonitor", ignore=True), Box(10.5, 20, 30.25, 40, "chair")]
    assert read_labels(ann, tmp_path).images[0].path == tmp_path / "a.jpg"


@pytest.mark.parametrize(("text", "expected"), [
    ("<annotation><filename>a.jpg</filename>\n<object>\n</annotation>",
     "not valid XML (mismatched tag: line 3, column 2)"),
    ("<annotation><object/></annotation>", "missing <filename>"),
    (voc_xml("a.jpg", "<object><bndbox/></object>"), "object 1: missing <name>"),
    (voc_xml("a.jpg", "<object><name>cat</name></object>"), "object 1 (cat): missing <bndbox>"),
    (voc_xml("a.jpg", voc_object("cat", (1, 2, 3, 4)).replace("<xmax>3</xmax>", "")),
     "object 1 (cat): <bndbox> missing <xmax>"),
    (voc_xml("a.jpg", voc_object("cat", (1, 2, "3x", 4))), "object 1 (cat): <bndbox> <xmax> is not a number: '3x'"),
    (voc_xml("a.jpg", voc_object("cat", (1, 2, 3, 4)) + voc_object("dog", (9, 2, 3, 4))),
     "object 2 (dog): box has x2 < x1"),
])
def test_voc_errors(tmp_path, text, expected):
    path = write(tmp_path / "ann" / "x.xml", text)
    error(lambda: read_voc(tmp_path / "ann", None), f"{path}: {expected}")


# ---------------------------------------------------------------------------------------- Cartucho txt


def txt_set(root: Path) -> tuple[Path, Path]:
    gt, images = root / "ground-truth", root / "images"
    image(images / "a.jpg", 8, 8)
    image(images / "b.PNG", 8, 8)
    image(images / "unlabelled.jpg", 8, 8)
    write(gt / "a.txt", "potted plant 1 2 3 4\n\nchair 10.5 20 30 40 difficult\n")
    write(gt / "b.txt", "")
    return gt, images


def test_read_txt(tmp_path):
    gt, images = txt_set(tmp_path)
    result = read_txt(gt, images)
    assert result.format == "txt"
    assert result.class_names == ["chair", "potted plant"]
    assert [(im.path, im.width, im.height) for im in result.images] == [
        (images / "a.jpg", None, None), (images / "b.PNG", None, None)]
    assert result.images[0].boxes == [Box(1, 2, 3, 4, "potted plant"), Box(10.5, 20, 30, 40, "chair", ignore=True)]
    assert result.images[1].boxes == []  # an empty label file: an image with no objects
    assert read_labels(gt).images[0].path == images / "a.jpg"  # images default: ../images


@pytest.mark.parametrize(("line", "expected"), [
    ("chair 1 2 x", "line 3: expected '<class> <left> <top> <right> <bottom>', got 'chair 1 2 x'"),
    ("1 2 3 4", "line 3: expected '<class> <left> <top> <right> <bottom>', got '1 2 3 4'"),
    ("chair 1 2 3 nan", "line 3: expected '<class> <left>"),
    ("chair 5 2 3 4", "line 3: box has x2 < x1 or y2 < y1 (5, 2, 3, 4)"),
])
def test_txt_errors(tmp_path, line, expected):
    gt, images = txt_set(tmp_path)
    write(gt / "a.txt", f"chair 1 2 3 4\n\n{line}\n")
    error(lambda: read_txt(gt, images), f"{gt / 'a.txt'}: {expected}")


def test_txt_label_without_image(tmp_path):
    gt, images = txt_set(tmp_path)
    write(gt / "zz.txt", "chair 1 2 3 4\n")
    error(lambda: read_labels(gt, images), f"{gt / 'zz.txt'}: no image zz.*", str(images))


# ---------------------------------------------------------------------------------------- format detection


def test_detect_format(tmp_path):
    write(tmp_path / "coco.json", json.dumps(coco_dict()))
    assert detect_format(tmp_path / "coco.json") == "coco"
    write(tmp_path / "voc" / "a.xml", voc_xml("a.jpg", ""))
    assert detect_format(tmp_path / "voc") == "voc"
    labels, _ = yolo_set(tmp_path / "y")
    write(labels / "0.txt", "")  # empty files are passed over: the first non-empty one decides
    assert detect_format(labels) == "yolo"
    gt, _ = txt_set(tmp_path / "t")
    assert detect_format(gt) == "txt"
    write(tmp_path / "px" / "a.txt", "0 12 30 40 50\n")  # an integer class, but pixel coordinates
    assert detect_format(tmp_path / "px") == "txt"
    assert set(FORMATS) == {"coco", "yolo", "voc", "txt"}


def test_detect_format_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    error(lambda: detect_format(tmp_path / "empty"), f"{tmp_path / 'empty'}: no label files")
    error(lambda: read_labels(tmp_path / "missing"), f"{tmp_path / 'missing'}: no such labels file or folder")
    csv = write(tmp_path / "labels.csv", "a,b\n")
    error(lambda: detect_format(csv), f"{csv}: not a COCO .json file")
    error(lambda: read_labels(tmp_path / "empty", tmp_path, fmt="txt"), f"{tmp_path / 'empty'}: no .txt label files")
    error(lambda: read_labels(csv, fmt="kitti"), "unknown label format 'kitti'")
    coco = write(tmp_path / "coco.json", json.dumps(coco_dict()))
    error(lambda: read_labels(coco, names=csv), f"{csv}: a names file is only read with YOLO labels")
    assert issubclass(LabelError, EdgeRuntimeError)


# ---------------------------------------------------------------------------------------- class matching


def test_match_classes_names_and_aliases():
    labels = ["person", "Dining_Table", "tvmonitor", "diningtable", "pottedplant", "sofa", "motorbike", "aeroplane",
              "cabinetry", "pillow"]
    match = match_classes(labels, COCO_CLASSES)
    index = COCO_CLASSES.index
    assert match.to_model == {"person": index("person"), "Dining_Table": index("dining table"),
                              "tvmonitor": index("tv"), "diningtable": index("dining table"),
                              "pottedplant": index("potted plant"), "sofa": index("couch"),
                              "motorbike": index("motorcycle"), "aeroplane": index("airplane")}
    assert match.how == {"person": "name", "Dining_Table": "name", "diningtable": "name", "pottedplant": "name",
                         "tvmonitor": "alias", "sofa": "alias", "motorbike": "alias", "aeroplane": "alias"}
    assert match.unmatched == ["cabinetry", "pillow"]
    # the alias table works in both directions: COCO labels against a VOC model
    voc = ["aeroplane", "diningtable", "motorbike", "pottedplant", "sofa", "tvmonitor"]
    back = match_classes(["tv", "couch", "airplane", "motorcycle", "potted plant", "dining table"], voc)
    assert back.to_model == {"tv": 5, "couch": 4, "airplane": 0, "motorcycle": 2, "potted plant": 3,
                             "dining table": 1}
    assert ALIASES["tvmonitor"] == "tv" and ALIASES["tv"] == "tvmonitor"


def test_match_classes_class_map(tmp_path):
    path = write(tmp_path / "map.json", json.dumps({"sofa": "chair", "person": None, "cabinetry": "Refrigerator",
                                                    "not a label": "cup"}))
    class_map = load_class_map(path)
    match = match_classes(["person", "sofa", "cabinetry", "pillow", "cup"], COCO_CLASSES, class_map)
    assert match.to_model == {"sofa": COCO_CLASSES.index("chair"), "cabinetry": COCO_CLASSES.index("refrigerator"),
                              "cup": COCO_CLASSES.index("cup")}
    assert match.how == {"sofa": "class-map", "cabinetry": "class-map", "cup": "name"}
    assert match.unmatched == ["person", "pillow"]
    text = match.describe({"person": 4, "sofa": 2, "cabinetry": 1, "pillow": 1, "cup": 3})
    assert "\n" not in text
    assert text.startswith("3 of 5 label classes match the model (2 by the class map: sofa->chair, "
                           "cabinetry->refrigerator)")
    assert "left out, the model has no such class (1 box): pillow (1 box)" in text
    assert "left out by the class map (4 boxes): person (4 boxes)" in text

    error(lambda: match_classes(["sofa"], COCO_CLASSES, {"sofa": "settee"}),
          "class map: 'sofa' -> 'settee', but the model has no class 'settee'")


def test_load_class_map_errors(tmp_path):
    bad = write(tmp_path / "bad.json", '{"a": }')
    error(lambda: load_class_map(bad), f"{bad}: not valid JSON")
    listed = write(tmp_path / "list.json", '["a", "b"]')
    error(lambda: load_class_map(listed), f"{listed}: a class map is a JSON object")
    number = write(tmp_path / "number.json", '{"a": 3}')
    error(lambda: load_class_map(number), f"{number}: 'a' maps to 3; expected a model class name or null")
    error(lambda: load_class_map(tmp_path / "none.json"), f"{tmp_path / 'none.json'}: cannot be read")


def test_describe_lists_left_out_classes():
    match = match_classes(["chair", "tvmonitor", "cabinetry", "pillow"], COCO_CLASSES)
    text = match.describe({"chair": 10, "tvmonitor": 3, "cabinetry": 52, "pillow": 45})
    assert text == ("2 of 4 label classes match the model (1 by alias: tvmonitor->tv); left out, the model has "
                    "no such class (97 boxes): cabinetry (52 boxes), pillow (45 boxes)")
    assert match.describe().endswith("left out, the model has no such class: cabinetry, pillow")


# --------------------------------------------------------------------------------------------- real data


def test_voc_indoor_fixture():
    root = fixture_path("datasets", "voc-indoor-85")
    labels = read_labels(root / "ground-truth", root / "images")
    assert labels.format == "txt"
    assert len(labels.images) == 85
    assert all(im.path.is_file() for im in labels.images)
    counts = labels.box_counts()
    assert (counts["chair"], counts["diningtable"]) == (106, 47)
    assert len(labels.class_names) == 30

    match = match_classes(labels.class_names, COCO_CLASSES)
    assert {n: COCO_CLASSES[i] for n, i in match.to_model.items()
            if n in ("diningtable", "pottedplant", "tvmonitor", "sofa", "chair")} == {
        "diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv", "sofa": "couch",
        "chair": "chair"}
    assert {"cabinetry", "pillow", "door", "pictureframe"} <= set(match.unmatched)
    assert len(match.to_model) == 15
    text = match.describe(counts)
    assert "cabinetry (52 boxes)" in text and "pillow (45 boxes)" in text
