"""``--backend auto``: time each runnable, verified artifact briefly on this host, pick the fastest whose
recorded accuracy drop against FP32 is within the budget (``budget.DropBudget``), and remember the choice in
the package (``autoselect.json``, keyed by host, threads, artifacts and budget) so the next start is instant.
An artifact that failed its check against FP32 (``Artifact.verified``) is never a candidate, nor one over
the budget, nor one whose recorded accuracy does not hold on this CPU (``hostfit.host_mismatch``), not even
when a cached choice names it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .backends import installed_backends, open_artifact
from .budget import DropBudget, Judgement, budget_for
from .compare import as_float
from .deploy.hostinfo import cpu_summary
from .errors import ModelLoadError
from .fsutil import atomic_write_text
from .hostfit import RECONVERT, host_mismatch
from .manifest import Artifact, Manifest

log = logging.getLogger(__name__)
CACHE_NAME = "autoselect.json"


def _host_key(candidates: list[Artifact], threads: int, budget: DropBudget) -> str:
    host = cpu_summary()
    ident = json.dumps([host["cpu"], host["arch"], host["flags"], threads, sorted(a.sha256 for a in candidates),
                        str(budget)])
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


@dataclass(frozen=True)
class AutoChoice:
    """What auto chose and why: every runnable verified artifact's measured median (ms; empty when there
    was only one) and its recorded drop judged against ``budget``."""

    artifact: Artifact
    budget: DropBudget
    median_ms: dict[str, float]
    judged: dict[str, Judgement]
    cached: bool = False
    unfit: dict[str, str] = field(default_factory=dict)  # verified artifacts left out: why their record fails here

    @property
    def over_budget(self) -> list[str]:
        return [key for key, verdict in self.judged.items() if not verdict.within]

    def explain(self) -> str:
        """One line: the choice, its time and recorded drop, the budget, and each artifact the budget excluded."""
        key = self.artifact.key
        facts = [f"{self.median_ms[key]:.2f} ms" if key in self.median_ms else "not timed: the only candidate"]
        facts += [self.judged[key].drop] if key in self.judged else []
        line = f"auto: {key} ({self.artifact.file}, {', '.join(facts)}), budget {self.budget} ({self.budget.source})"
        excluded = [f"{k} ({f'{self.median_ms[k]:.2f} ms, ' if k in self.median_ms else ''}{self.judged[k].drop})"
                    for k in self.over_budget]
        line += f"; excluded, over budget: {', '.join(excluded)}" if excluded else ""
        line += "".join(f"; excluded, {key}: {why}" for key, why in self.unfit.items())
        return line + ("; timings cached" if self.cached else "")


def _candidates(manifest: Manifest, precision: str | None) -> tuple[list[Artifact], dict[str, str]]:
    """``auto_candidates``, and the verified installed artifacts left out because their record does not hold
    on this CPU (key -> why). Auto takes no backend options: a non-CPU device named for auto does not lift
    the CPU rule (the safe side)."""
    runnable = installed_backends()
    installed = [a for a in manifest.artifacts
                 if a.verified and a.format in runnable and precision in (None, a.precision)]
    unfit = {a.key: why for a in installed if (why := host_mismatch(a))}
    return [a for a in installed if a.key not in unfit], unfit


def auto_candidates(manifest: Manifest, precision: str | None = None) -> list[Artifact]:
    """The artifacts auto may time: verified, of ``precision`` (None: any), with a backend installed, and
    with a record that holds on this CPU."""
    return _candidates(manifest, precision)[0]


def fastest_artifact(manifest: Manifest, threads: int, precision: str | None = None,
                     max_drop: str | DropBudget | None = None) -> Artifact:
    """The fastest runnable verified artifact within the accuracy budget (see ``choose_artifact``)."""
    return choose_artifact(manifest, threads, precision, max_drop).artifact


def choose_artifact(manifest: Manifest, threads: int, precision: str | None = None,
                    max_drop: str | DropBudget | None = None) -> AutoChoice:
    """Auto's choice with its reasons. ``max_drop``: a ``DropBudget`` or its text ('cos:0.01', 'map:0.5',
    'off'); None: the budget convert recorded in the package, else the built-in cos:0.01. Raises
    ``ModelLoadError`` when no runnable verified artifact is within the budget (naming each one's drop)."""
    budget = budget_for(manifest, max_drop)
    choices, unfit = _candidates(manifest, precision)
    if not choices:
        wanted = [a for a in manifest.artifacts if precision in (None, a.precision)]
        if wanted and not any(a.verified for a in wanted):
            failed = "; ".join(f"{a.key} ({a.verdict.describe()})" for a in wanted)
            raise ModelLoadError(f"{manifest.path}: no verified artifact to choose from; failed their check "
                                 f"against FP32: {failed}")
        runnable = installed_backends()
        missing = next((a for a in wanted if a.verified and a.format not in runnable), None)
        if missing is None and unfit:
            raise ModelLoadError(f"{manifest.path}: no artifact's accuracy record holds on this CPU: "
                                 + "; ".join(f"{key}: {why}" for key, why in unfit.items()) + f"; {RECONVERT}")
        # a verified one whose backend is missing: opening it names the extra to install
        art = missing or next((a for a in wanted if a.verified), None) or manifest.artifact(None, precision)
        return AutoChoice(art, budget, {}, {}, unfit=unfit)
    judged = {a.key: budget.judge(a) for a in choices}
    within = [a for a in choices if judged[a.key].within]
    if not within:
        drops = "; ".join(f"{key}: {verdict.drop}" for key, verdict in judged.items())
        raise ModelLoadError(f"{manifest.path}: no {precision + ' ' if precision else ''}artifact is within the "
                             f"accuracy budget {budget} ({budget.source}): {drops}; pass a looser --max-drop "
                             f"(or --max-drop off)")
    if len(choices) == 1:
        return AutoChoice(within[0], budget, {}, judged, unfit=unfit)
    key = _host_key(choices, threads, budget)
    cache_path = manifest.root / CACHE_NAME
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(key)
    # a damaged or edited cache entry is a miss, never an error: every field is checked before use
    cached = (isinstance(entry, dict) and isinstance(entry.get("choice"), str)
              and entry["choice"] in {a.key for a in within} and isinstance(entry.get("median_ms"), dict)
              and set(entry["median_ms"]) == set(judged)
              and all(math.isfinite(as_float(v)) for v in entry["median_ms"].values()))
    if not cached:
        timings = {a.key: measure(manifest, a, threads) for a in choices}
        entry = {"choice": min((a.key for a in within), key=timings.get), "median_ms": timings,
                 "budget": str(budget), "over_budget": {k: v.drop for k, v in judged.items() if not v.within},
                 "threads": threads, "host": cpu_summary()["cpu"], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        cache[key] = entry
        log.info("auto backend: %s", ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(timings.items(),
                                                                                  key=lambda kv: kv[1])))
        try:
            atomic_write_text(cache_path, json.dumps(cache, indent=2))  # a linked cache is refused (an OSError)
        except OSError:  # a read-only package still works, it just measures again next time
            log.debug("cannot cache the auto choice in %s", cache_path)
    chosen = next(a for a in within if a.key == entry["choice"])
    return AutoChoice(chosen, budget, {k: float(v) for k, v in entry["median_ms"].items()}, judged, cached, unfit)
