"""The grey-114 letterbox modes reproduce the official YOLO preprocessing pixel for pixel.

The references below transcribe ultralytics' ``LetterBox`` (center=True, auto=False, scaleup=True)
and YOLOX's ``preproc`` (top-left, truncated size); the runtime must give the same uint8 image,
and its inverse transform must map a box back as ultralytics' ``scale_boxes`` does.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.manifest import InputSpec
from edge_runtime.preprocess import ImagePreprocessor

IMAGES = ("dog.jpg", "person.jpg", "giraffe.jpg", "000004.jpg")  # landscape and portrait


def ultralytics_letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    shape = image.shape[:2]
    r = min(size[0] / shape[0], size[1] / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = (size[1] - new_unpad[0]) / 2, (size[0] - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        image = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def yolox_preproc(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    padded = np.ones((size[0], size[1], 3), dtype=np.uint8) * 114
    r = min(size[0] / image.shape[0], size[1] / image.shape[1])
    resized = cv2.resize(image, (int(image.shape[1] * r), int(image.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
    padded[: int(image.shape[0] * r), : int(image.shape[1] * r)] = resized
    return padded


def _preprocessor(mode: str, hw: tuple[int, int]) -> ImagePreprocessor:
    # mean 0 / std 1 and BGR: the tensor holds the letterboxed uint8 image's values unchanged
    return ImagePreprocessor(InputSpec("images", (1, 3, *hw), "NCHW", "float32", "BGR", (0.0, 0.0, 0.0),
                                       (1.0, 1.0, 1.0), mode))


@pytest.mark.parametrize("mode, reference", [("letterbox", ultralytics_letterbox),
                                             ("letterbox_top_left", yolox_preproc)])
@pytest.mark.parametrize("hw", [(640, 640), (416, 416), (320, 480)])
def test_letterbox_matches_the_official_preprocessing(mode, reference, hw, read_image):
    prep = _preprocessor(mode, hw)
    for name in IMAGES:
        image = read_image(name)
        tensor, meta = prep(image)
        want = reference(image, hw)
        assert want.shape[:2] == hw
        got = tensor[0].transpose(1, 2, 0)
        assert np.array_equal(got, want.astype(np.float32)), (name, np.abs(got - want).max())
        assert (meta.height, meta.width) == image.shape[:2]


def test_letterbox_maps_boxes_back_as_ultralytics(read_image):
    hw = (640, 640)
    prep = _preprocessor("letterbox", hw)
    for name in IMAGES:
        image = read_image(name)
        _, meta = prep(image)
        h, w = image.shape[:2]
        gain = min(hw[0] / h, hw[1] / w)
        pad = round((hw[1] - w * gain) / 2 - 0.1), round((hw[0] - h * gain) / 2 - 0.1)
        box = np.array([[100.0, 120.0], [400.0, 380.0]])  # two corners in model-input pixels
        ours = box @ meta.to_original[:, :2].T + meta.to_original[:, 2]
        theirs = (box - pad) / gain  # ultralytics scale_boxes
        # ours uses the resized image's exact per-axis scale; gain rounds it: under half a pixel apart
        assert np.abs(ours - theirs).max() < 0.5, (name, ours, theirs)
        # the padded band maps outside the image, the image area onto it
        corners = np.array([[pad[0], pad[1]], [hw[1] - pad[0], hw[0] - pad[1]]], np.float64)
        mapped = corners @ meta.to_original[:, :2].T + meta.to_original[:, 2]
        assert np.abs(mapped - [[0, 0], [w, h]]).max() < 1.0, (name, mapped)
