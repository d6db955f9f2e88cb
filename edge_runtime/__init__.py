"""edge-runtime: run exported detector packages on edge devices (no torch needed)."""

__version__ = "0.1.0"

from .detections import Detections  # noqa: E402
from .detector import Detector  # noqa: E402
from .errors import EdgeRuntimeError  # noqa: E402
from .io.pipeline import run_pipeline  # noqa: E402
from .io.sources import open_source  # noqa: E402
from .manifest import Manifest, load_manifest  # noqa: E402

__all__ = ["Detections", "Detector", "EdgeRuntimeError", "Manifest", "load_manifest", "open_source", "run_pipeline",
           "__version__"]
