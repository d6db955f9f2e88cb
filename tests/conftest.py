"""Shared test setup: the real fixtures folder and packages exported once per test session.

This file imports neither torch nor the converters at module level, so the runtime-only tests
collect on a device without torch; the export fixtures skip there instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

# ../shared/fixtures relative to the repository root (absent in a fresh clone: tests skip)
FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
SAMPLES = "images/samples"

# let tests import the helper modules next to this file (reference_decode)
sys.path.insert(0, str(Path(__file__).resolve().parent))


def load_driver(path: Path, source: str):
    """Write ``source`` to ``path`` and import it: the native side of an emulation test runs the very file the
    emulated Python runs (tests/test_arm64.py, tests/test_x86_avx2.py)."""
    import importlib.util

    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fixture_path(*parts: str) -> Path:
    """``FIXTURES / parts``; skips the calling test with a clear reason when it does not exist."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real fixture {path} is not available (the shared fixtures folder "
                    f"../shared/fixtures is absent or incomplete)")
    return path


@pytest.fixture(scope="session")
def fixtures() -> Callable[..., Path]:
    """``fixtures("weights/x.pth")`` -> Path inside the shared fixtures folder, or skip."""
    return fixture_path


@pytest.fixture(scope="session")
def read_image(fixtures) -> Callable[[str], "object"]:
    """``read_image("dog.jpg")`` -> HxWx3 uint8 BGR array of a sample image (skips if absent)."""
    import cv2

    cache: dict[str, object] = {}

    def read(name: str):
        if name not in cache:
            image = cv2.imread(str(fixtures(SAMPLES, name)), cv2.IMREAD_COLOR)
            assert image is not None, f"OpenCV could not read {name}"
            cache[name] = image
        return cache[name].copy()

    return read


# key -> what export_package is given; weights/classes are relative to FIXTURES
PACKAGES: dict[str, dict] = {
    "nanodet-plus-m": {"model": "nanodet-plus-m", "weights": "weights/nanodet-plus-m/nanodet-plus-m_coco.ckpt",
                       "imgsz": 416, "classes": None},
    "yolo-fastestv2": {"model": "yolo-fastestv2", "weights": "weights/yolo-fastestv2/coco2017-0.241078ap-model.pth",
                       "imgsz": 352, "classes": None},
    "nanodet-m-custom": {"model": "nanodet-m", "weights": "weights/nanodet-m-custom/nanodet_m256.pth",
                         "imgsz": 256, "classes": "weights/nanodet-m-custom/nanodet-m256.yml"},
}


@pytest.fixture(scope="session")
def export(tmp_path_factory) -> Callable[[str], Path]:
    """``export(key)`` -> folder of the package ``PACKAGES[key]``, exported at most once per session.

    Skips when torch/onnx/onnxslim or the fixture weights are missing.
    """
    done: dict[str, Path] = {}

    def make(key: str) -> Path:
        if key not in done:
            pytest.importorskip("torch", reason="exporting a package needs torch (host-side converters)")
            pytest.importorskip("onnx", reason="exporting a package needs onnx")
            pytest.importorskip("onnxslim", reason="exporting a package needs onnxslim")
            from converters.export_onnx import export_package

            cfg = PACKAGES[key]
            weights = fixture_path(cfg["weights"])
            classes = fixture_path(cfg["classes"]) if cfg["classes"] else None
            out = tmp_path_factory.mktemp(f"pkg-{key}")
            export_package(cfg["model"], weights, out, imgsz=cfg["imgsz"], classes=classes)
            done[key] = out
        return done[key]

    return make


@pytest.fixture(scope="session")
def nanodet_plus_package(export) -> Path:
    return export("nanodet-plus-m")


@pytest.fixture(scope="session")
def yolo_fastestv2_package(export) -> Path:
    return export("yolo-fastestv2")


@pytest.fixture(scope="session")
def nanodet_m_package(export) -> Path:
    return export("nanodet-m-custom")


@pytest.fixture(scope="session")
def demo_package(tmp_path_factory) -> Path:
    """``edge-runtime export --model demo-shapes`` with no --weights (the bundled file): no fixtures needed."""
    pytest.importorskip("torch", reason="exporting a package needs torch (host-side converters)")
    out = tmp_path_factory.mktemp("demo-shapes") / "pkg"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "export", "--model", "demo-shapes", "--out",
                           str(out)], check=False, capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def package_copy(nanodet_plus_package, tmp_path) -> Path:
    """A private, writable copy of the NanoDet-Plus-m 416 package (for corrupting it)."""
    dst = tmp_path / "pkg"
    shutil.copytree(nanodet_plus_package, dst)
    return dst
