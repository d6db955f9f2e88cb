"""Detector: a package folder in, Detections out. The public entry point of the runtime."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from .autoselect import AutoChoice, choose_artifact
from .backends import Backend, open_artifact
from .budget import DropBudget
from .deploy.hostinfo import physical_cores
from .deploy.targets import Target, runtime_choice
from .detections import Detections
from .errors import ModelLoadError
from .families import Family, make_family
from .hostfit import RECONVERT, host_mismatch
from .io.sources import load_image
from .manifest import Artifact, Manifest, load_manifest
from .preprocess import ImageMeta

log = logging.getLogger(__name__)


def artifact_to_run(manifest: Manifest, backend: str, precision: str | None, threads: int,
                    max_drop: str | DropBudget | None = None, options: dict[str, Any] | None = None) -> Artifact:
    """Pick the artifact to run: ``backend`` is an artifact format (a key of ``edge_runtime.backends.BACKENDS``)
    or "auto" (the fastest runnable verified artifact on this host within the accuracy budget ``max_drop``,
    measured once and cached: ``autoselect.choose_artifact``). A named artifact that failed its check against
    FP32 still runs, with a warning, as does one whose record does not hold on this CPU (``hostfit``;
    ``options``: the backend options it will run with)."""
    if backend != "auto":
        verified = (a for a in manifest.artifacts if a.verified and a.format == backend
                    and precision in (None, a.precision))
        art = next(verified, None) or manifest.artifact(backend, precision)  # verified first when both exist
        if not art.verified:  # the user asked for it by name: run it, but say it is not what was validated
            log.warning("%s: %s has no passing check against FP32 (%s); its detections may be wrong",
                        manifest.path, art.file, art.verdict.describe())
        elif why := host_mismatch(art, options=options):
            log.warning("%s: %s: %s; its detections may differ from what was validated: %s", manifest.path,
                        art.file, why, RECONVERT)
        return art
    return choose_artifact(manifest, threads, precision, max_drop).artifact


class Detector:
    """Loads a package (manifest + artifact), runs images through preprocess -> backend -> decode.

    >>> det = Detector("pkg/", target="rpi4")     # the artifact, threads and delegate the profile prefers
    >>> dets = det("street.jpg")                  # or an HxWx3 BGR array; a list gives a list
    >>> dets.save("street.out.jpg", "street.jpg")  # Detections in original-image pixels, drawn

    ``target`` (a profile name, .toml path or ``Target``) fills in what ``backend``, ``precision`` and
    ``threads`` leave open (see ``deploy.targets.runtime_choice``); ``options`` override its backend options.
    ``max_drop``: the accuracy budget of ``backend="auto"`` ('cos:0.01', 'map:0.5', 'off' or a
    ``budget.DropBudget``; None: the package's, see ``budget.budget_for``); ``auto_choice`` then says
    what was chosen and why (``auto_choice.explain()``).
    """

    def __init__(self, package: str | Path, target: str | Target | None = None, backend: str = "auto",
                 precision: str | None = None, threads: int | None = None, options: dict[str, Any] | None = None,
                 score_threshold: float | None = None, nms_iou: float | None = None,
                 max_drop: str | DropBudget | None = None) -> None:
        self.manifest = load_manifest(package)
        choice = runtime_choice(self.manifest, target, backend, precision, threads, options)
        self.threads = choice.threads or physical_cores()
        self.auto_choice: AutoChoice | None = None
        if choice.backend == "auto":
            self.auto_choice = choose_artifact(self.manifest, self.threads, choice.precision, max_drop)
            self.artifact = self.auto_choice.artifact
            log.debug("%s", self.auto_choice.explain())  # the CLI prints it; a script reads auto_choice
        else:
            if max_drop is not None:
                log.warning("%s: the accuracy budget %s applies to backend auto; backend %s was named (by the "
                            "caller or the target), so it is not applied", self.manifest.path, max_drop,
                            choice.backend)
            self.artifact = artifact_to_run(self.manifest, choice.backend, choice.precision, self.threads,
                                            options=choice.options)
        path = self.manifest.artifact_path(self.artifact)
        # options come from the caller (CLI flags, a target profile); the package adds only the settings its
        # artifact was verified with (Backend.recorded_options checks them), which the caller's override
        self.backend: Backend = open_artifact(self.manifest, self.artifact, self.threads, choice.options,
                                              verify=False)
        self.input_spec = self.manifest.input_for(self.artifact)
        self.family: Family = make_family(self.manifest, self.input_spec)
        if score_threshold is not None:
            self.family.postprocess["score_threshold"] = score_threshold
        if nms_iou is not None:
            self.family.postprocess["nms_iou"] = nms_iou
        self._check_io(path)
        self.input_name = self.input_spec.name
        self.output_names = list(self.artifact.outputs)
        self.last_timings: dict[str, float] = {}

    def _check_io(self, path: Path) -> None:
        inputs = {t.name: t for t in self.backend.inputs}
        spec = self.input_spec
        if spec.name not in inputs:
            raise ModelLoadError(f"{path}: has no input named {spec.name!r} (has {', '.join(inputs)})")
        shape = [d if isinstance(d, int) else -1 for d in inputs[spec.name].shape]
        if any(d not in (-1, e) for d, e in zip(shape, spec.shape)) or len(shape) != len(spec.shape):
            raise ModelLoadError(f"{path}: input shape {shape} does not match manifest input.shape {list(spec.shape)}")
        names = {t.name for t in self.backend.outputs}
        missing = [n for n in self.artifact.outputs if n not in names]
        if missing:
            raise ModelLoadError(f"{path}: lacks outputs {missing} listed in the manifest (has {sorted(names)})")
        if len(self.artifact.outputs) != len(self.family.output_roles):
            raise ModelLoadError(f"{path}: family {self.manifest.family} reads {len(self.family.output_roles)} "
                                 f"outputs {self.family.output_roles}, manifest lists {list(self.artifact.outputs)}")
        first = next(t.shape for t in self.backend.outputs if t.name == self.artifact.outputs[0])
        if problem := self.family.output_shape_problem(tuple(first)):
            raise ModelLoadError(f"{path}: output {self.artifact.outputs[0]!r} {problem} (manifest and model disagree)")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    @property
    def score_threshold(self) -> float:
        """Detections scoring at or below this are dropped by decode (the manifest's unless overridden)."""
        return float(self.family.postprocess["score_threshold"])

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.family.postprocess["score_threshold"] = float(value)

    def preprocess(self, image: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, ImageMeta]:
        """One HxWx3 uint8 BGR image -> model input (written into ``out`` when given, see
        ``new_input``) and the metadata that maps boxes back to the image."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be an HxWx3 uint8 BGR array, got {getattr(image, 'shape', image)!r}")
        return self.family.preprocess(image, out)

    def new_input(self) -> np.ndarray:
        """A preallocated input buffer, so a pipeline can preprocess the next frame during inference."""
        return self.family.preprocess.new_tensor()

    def infer(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the backend on a prepared input tensor; outputs in the family's role order."""
        out = self.backend.run({self.input_name: tensor})
        return [out[name] for name in self.output_names]

    def decode(self, outputs: list[np.ndarray], meta: ImageMeta) -> Detections:
        """Raw outputs -> thresholded, class-wise NMS'd Detections in original-image pixels."""
        return self.family.decode(outputs, meta)

    @overload
    def __call__(self, image: np.ndarray | str | Path) -> Detections: ...

    @overload
    def __call__(self, image: Sequence[np.ndarray | str | Path]) -> list[Detections]: ...

    def __call__(self, image: np.ndarray | str | Path | Sequence[np.ndarray | str | Path]
                 ) -> Detections | list[Detections]:
        """Detect objects in an HxWx3 uint8 BGR image or an image file (a list of either: a list of
        Detections); per-stage times of the last image land in ``last_timings`` (ms)."""
        if isinstance(image, (list, tuple)):
            return [self._detect(load_image(one)) for one in image]
        return self._detect(load_image(image))

    def _detect(self, image: np.ndarray) -> Detections:
        t0 = time.perf_counter()
        tensor, meta = self.preprocess(image)
        t1 = time.perf_counter()
        outputs = self.infer(tensor)
        t2 = time.perf_counter()
        dets = self.decode(outputs, meta)
        t3 = time.perf_counter()
        self.last_timings = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                             "postprocess": (t3 - t2) * 1e3}
        return dets

    def describe(self) -> str:
        return (f"{self.manifest.name} [{self.artifact.file}: {self.artifact.format} {self.artifact.precision}] "
                f"on {self.backend.describe()}")
