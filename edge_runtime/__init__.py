"""edge-runtime: run exported detector packages on edge devices (no torch needed)."""

__version__ = "0.1.0"

from .detections import Detections  # noqa: E402
from .detector import Detector  # noqa: E402
from .errors import EdgeRuntimeError  # noqa: E402
from .io.pipeline import iter_pipeline, run_pipeline  # noqa: E402
from .io.sources import open_source  # noqa: E402
from .manifest import Manifest, load_manifest  # noqa: E402
from .tracking import CountLine, TrackerSettings, Tracking, Zone  # noqa: E402

__all__ = ["CountLine", "Detections", "Detector", "EdgeRuntimeError", "Manifest", "Tracking", "TrackerSettings", "Zone",
           "iter_pipeline", "load_manifest", "open_source", "run_pipeline", "__version__"]
