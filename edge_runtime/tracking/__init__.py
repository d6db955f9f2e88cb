"""Tracking and counting: ids kept across frames (``ByteTracker``), line crossings and zone dwell
(``regions``), and ``Tracking``, the pipeline stage that runs them together.

    >>> from edge_runtime.io.pipeline import iter_pipeline
    >>> for frame, dets in iter_pipeline(detector, open_source("walk.mp4"), track=Tracking(lines=[door])):
    ...     print(frame.index, dets.track_ids)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..detections import Detections
from ..timing import format_table
from .regions import CountLine, LineCounter, Zone, ZoneCounter, anchors, load_regions, parse_line
from .tracker import DEFAULT_HIGH_SCORE, ByteTracker, TrackerSettings, _load_lap, box_iou

__all__ = ["ByteTracker", "CountLine", "LineCounter", "Tracking", "TrackerSettings", "Zone", "ZoneCounter",
           "box_iou", "load_regions", "parse_line"]


class Tracking:
    """Tracker plus counters, one call per frame: ``update(dets, t) -> (tracked, events)``.

    ``settings.high_score`` None (the default) means the detector's own score threshold: ``iter_pipeline``
    calls ``bind`` with it, and lowers the detector's threshold to ``settings.low_score`` for the run so the
    low-score detections reach the tracker. One ``Tracking`` given to a second run carries its ids and counts
    on into it (a clock that goes back, as a file's does, is taken as restarted).
    """

    def __init__(self, settings: TrackerSettings | None = None, lines: Sequence[CountLine] = (),
                 zones: Sequence[Zone] = ()) -> None:
        _load_lap()  # a missing solver fails here, before the CLI opens the model and camera, not at frame one
        self.settings = settings or TrackerSettings()
        self.tracker: ByteTracker | None = None
        self.lines = [LineCounter(line) for line in lines]
        self.zones = [ZoneCounter(zone) for zone in zones]
        self.t = 0.0
        self.events: list[dict[str, Any]] = []  # the last update's crossings and zone entries / exits

    def bind(self, score_threshold: float) -> TrackerSettings:
        """Make the tracker, taking ``score_threshold`` as the high score unless the settings name one;
        returns the settings in force (the first call decides)."""
        if self.tracker is None:
            self.settings = self.settings.resolved(score_threshold)
            self.tracker = ByteTracker(self.settings)
        return self.settings

    def update(self, dets: Detections, t: float) -> tuple[Detections, list[dict[str, Any]]]:
        """One frame taken at ``t`` seconds -> (its tracked detections, this frame's crossing / zone events)."""
        if self.tracker is None:
            self.bind(DEFAULT_HIGH_SCORE)
        tracked = self.tracker.update(dets, t)
        removed = self.tracker.removed_ids
        self.t = t
        events: list[dict[str, Any]] = []
        points = anchors(tracked)
        for counter in self.lines:
            events += counter.update(tracked, removed, points)
        for zone in self.zones:
            events += zone.update(tracked, removed, t, points)
        self.events = events
        return tracked, events

    @property
    def ids_issued(self) -> int:
        return 0 if self.tracker is None else self.tracker.ids_issued

    def snapshot(self) -> dict[str, Any]:
        """Counts so far: ``{"tracks": N alive, "ids": N issued, "lines": {...}, "zones": {...}}``."""
        out: dict[str, Any] = {"tracks": 0 if self.tracker is None else len(self.tracker.active_ids),
                               "ids": self.ids_issued}
        if self.lines:
            out["lines"] = {c.line.name: c.snapshot() for c in self.lines}
        if self.zones:
            out["zones"] = {z.zone.name: z.snapshot(self.t) for z in self.zones}
        return out

    def table(self) -> str:
        """The counts as text for the end of a run."""
        lines = [f"tracking: {self.ids_issued} ids issued"]
        rows = [[c.line.name, label, c.counts["in"][label], c.counts["out"][label]]
                for c in self.lines for label in sorted(set(c.counts["in"]) | set(c.counts["out"]))]
        rows += [[c.line.name, "(none)", 0, 0] for c in self.lines if not c.counts["in"] and not c.counts["out"]]
        if rows:
            lines.append(format_table(["line", "class", "in", "out"], rows))
        zone_rows = []
        for z in self.zones:
            snap = z.snapshot(self.t)
            for label in sorted(set(snap["visits"]) | set(snap["occupancy"])):
                zone_rows.append([z.zone.name, label, snap["occupancy"].get(label, 0), snap["visits"].get(label, 0),
                                  snap["mean_dwell_s"].get(label, ""), snap["max_dwell_s"].get(label, "")])
            if not snap["visits"] and not snap["occupancy"]:
                zone_rows.append([z.zone.name, "(none)", 0, 0, "", ""])
        if zone_rows:  # no visit ended yet: blank dwell cells (a "nan" replaced afterwards took "banana" too)
            lines.append(format_table(["zone", "class", "inside now", "visits ended", "mean dwell s", "max dwell s"],
                                      zone_rows))
        return "\n".join(lines)
