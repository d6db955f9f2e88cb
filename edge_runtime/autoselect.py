"""``--backend auto``: time each runnable, verified artifact briefly on this host, pick the fastest,
and remember the choice in the package (``autoselect.json``) so the next start is instant. An artifact
that failed its check against FP32 (``Artifact.verified``) is never a candidate."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np

from .backends import installed_backends, open_artifact
from .deploy.hostinfo import cpu_summary
from .errors import ModelLoadError
from .fsutil import atomic_write_text
from .manifest import Artifact, Manifest

log = logging.getLogger(__name__)
CACHE_NAME = "autoselect.json"


def _host_key(manifest: Manifest, candidates: list[Artifact], threads: int) -> str:
    host = cpu_summary()
    ident = json.dumps([host["cpu"], host["arch"], host["flags"], threads, sorted(a.sha256 for a in candidates)])
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def measure(manifest: Manifest, art: Artifact, threads: int, runs: int = 10) -> float:
    """Median model-only latency (ms) of ``art`` on a zero input."""
    spec = manifest.input_for(art)
    backend = open_artifact(manifest, art, threads)
    feed = {spec.name: np.zeros(spec.shape, np.float32)}
    for _ in range(3):
        backend.run(feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.run(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def auto_candidates(manifest: Manifest, precision: str | None = None) -> list[Artifact]:
    """The artifacts auto may choose: verified, of ``precision`` (None: any), with a backend installed."""
    runnable = installed_backends()
    return [a for a in manifest.artifacts if a.verified and a.format in runnable and precision in (None, a.precision)]


def fastest_artifact(manifest: Manifest, threads: int, precision: str | None = None) -> Artifact:
    choices = auto_candidates(manifest, precision)
    if not choices:
        wanted = [a for a in manifest.artifacts if precision in (None, a.precision)]
        if wanted and not any(a.verified for a in wanted):
            failed = "; ".join(f"{a.key} ({a.verdict.describe()})" for a in wanted)
            raise ModelLoadError(f"{manifest.path}: no verified artifact to choose from; failed their check "
                                 f"against FP32: {failed}")
        # a verified one whose backend is missing: opening it names the extra to install
        return next((a for a in wanted if a.verified), None) or manifest.artifact(None, precision)
    if len(choices) == 1:
        return choices[0]
    key = _host_key(manifest, choices, threads)
    cache_path = manifest.root / CACHE_NAME
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    entry = cache.get(key)
    if entry is None or entry.get("choice") not in {a.key for a in choices}:
        timings = {a.key: measure(manifest, a, threads) for a in choices}
        entry = {"choice": min(timings, key=timings.get), "median_ms": timings, "threads": threads,
                 "host": cpu_summary()["cpu"], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        cache[key] = entry
        log.info("auto backend: %s", ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(timings.items(), key=lambda kv: kv[1])))
        try:
            atomic_write_text(cache_path, json.dumps(cache, indent=2))  # a linked cache is refused (an OSError)
        except OSError:  # a read-only package still works, it just measures again next time
            log.debug("cannot cache the auto choice in %s", cache_path)
    return next(a for a in choices if a.key == entry["choice"])
