"""Counting on top of tracks: crossings of a line, and time spent in a zone, per class.

Both follow each track's anchor, the centre of its box, from frame to frame, and forget a track when the
tracker drops it (``ByteTracker.removed_ids``), so their memory is bounded by the tracks alive.

Directions: a line runs from its first point to its second; "in" is a crossing from its left to its right
as seen looking along it in the image (y pointing down), so ``0,300 -> 640,300`` counts "in" downwards and
``640,300 -> 0,300`` upwards.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..detections import Detections
from ..errors import EdgeRuntimeError

#: a track switches side only once its centre is this fraction of its box's shorter side past the line, so a
#: box that jitters on the line is not counted again and again
LINE_HYSTERESIS = 0.1
#: the largest coordinate a line or zone may have, in pixels: far beyond any frame, well within the int32
#: OpenCV draws with (a point at 1e10 was accepted and then failed the run at its first drawn frame)
MAX_COORDINATE = 1e6


def anchors(dets: Detections) -> np.ndarray:
    """(N, 2) centres of the boxes."""
    return (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2


@dataclass(frozen=True)
class CountLine:
    name: str
    start: tuple[float, float]
    end: tuple[float, float]

    def __post_init__(self) -> None:
        if self.start == self.end:
            raise ValueError(f"line {self.name!r}: its two points are the same")


@dataclass(frozen=True)
class Zone:
    name: str
    polygon: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.polygon) < 3:
            raise ValueError(f"zone {self.name!r}: a polygon needs at least 3 points, got {len(self.polygon)}")

    @cached_property
    def _edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """x1, y1 of each edge's start, dx/dy of each edge, y2 of its end (inf slope for horizontal edges)."""
        poly = np.asarray(self.polygon, np.float64)
        x1, y1 = poly[:, 0], poly[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (x2 - x1) / (y2 - y1)
        return x1, y1, slope, y2

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: which of the (N, 2) points lie inside (even-odd rule, vectorised over points and edges)."""
        x1, y1, slope, y2 = self._edges
        px, py = points[:, :1], points[:, 1:2]
        straddles = (y1 > py) != (y2 > py)  # a horizontal edge never straddles: its inf slope is never used
        with np.errstate(invalid="ignore"):
            crossings = straddles & (px < x1 + (py - y1) * slope)
        return np.count_nonzero(crossings, axis=1) % 2 == 1


def parse_line(spec: str, index: int = 1) -> CountLine:
    """``--count-line [NAME=]X1,Y1,X2,Y2`` (pixels of the source frame) -> CountLine (``line<index>``
    when unnamed); a ValueError saying what is wrong."""
    name, _, coords = spec.rpartition("=")
    try:
        values = [float(v) for v in coords.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not all(abs(v) <= MAX_COORDINATE for v in values):  # also rules out nan and inf
        raise ValueError(f"--count-line {spec}: expected [NAME=]X1,Y1,X2,Y2 in pixels (e.g. door=0,300,640,300), "
                         f"each within +-{MAX_COORDINATE:g}")
    return CountLine(name or f"line{index}", (values[0], values[1]), (values[2], values[3]))


def _point(value: Any, where: str) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= MAX_COORDINATE
                       for v in value)):  # an int of any size compares exactly; nan and inf fail the bound
        raise ValueError(f"{where}: expected a point [x, y] in pixels within +-{MAX_COORDINATE:g}, "
                         f"got {json.dumps(value)[:60]}")
    return float(value[0]), float(value[1])


MAX_REGIONS_BYTES = 1_000_000
MAX_REGIONS_NESTING = 16


def _nesting(text: str) -> int:
    """The deepest nesting of [ and { in JSON ``text``, brackets inside strings not counted."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load_regions(path: str | Path) -> tuple[list[CountLine], list[Zone]]:
    """A regions file -> (lines, zones). JSON, pixels of the source frame::

        {"zones": [{"name": "door", "polygon": [[100, 80], [300, 80], [300, 400], [100, 400]]}],
         "lines": [{"name": "entry", "points": [[0, 300], [640, 300]]}]}

    Both keys are optional, names must be unique; anything else is a one-line EdgeRuntimeError naming the file.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_REGIONS_BYTES:
            raise ValueError(f"larger than {MAX_REGIONS_BYTES // 1_000_000} MB")
        text = path.read_text(encoding="utf-8")
        if (depth := _nesting(text)) > MAX_REGIONS_NESTING:
            # checked before parsing: json's decoder recurses in C, and where a library has raised Python's
            # recursion limit a deep enough file overflows the C stack (a crash, not a RecursionError)
            raise ValueError(f"nested {depth} levels deep (a regions file needs 5)")
        data = json.loads(text)
    except FileNotFoundError:
        raise EdgeRuntimeError(f"{path}: no such file") from None
    # ValueError: JSONDecodeError, and an integer of more than 4300 digits
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EdgeRuntimeError(f"{path}: not a readable JSON regions file ({exc})") from None
    try:
        if not isinstance(data, dict) or set(data) - {"zones", "lines"} or not data:
            raise ValueError('expected an object with "zones" and/or "lines" lists')
        lines, zones = [], []
        for i, item in enumerate(data.get("lines", [])):
            _check_keys(item, {"name", "points"}, f"lines[{i}]")
            points = item["points"]
            if not isinstance(points, list) or len(points) != 2:
                raise ValueError(f"lines[{i}].points: expected two points [[x1, y1], [x2, y2]]")
            ends = (_point(p, f"lines[{i}].points") for p in points)
            lines.append(CountLine(_name(item["name"], f"lines[{i}]"), *ends))
        for i, item in enumerate(data.get("zones", [])):
            _check_keys(item, {"name", "polygon"}, f"zones[{i}]")
            if not isinstance(item["polygon"], list):
                raise ValueError(f"zones[{i}].polygon: expected a list of points")
            corners = tuple(_point(p, f"zones[{i}].polygon") for p in item["polygon"])
            zones.append(Zone(_name(item["name"], f"zones[{i}]"), corners))
        if dup := reused_name([*lines, *zones]):
            raise ValueError(f"names must be unique, {dup!r} is used twice")
    except (ValueError, TypeError) as exc:
        raise EdgeRuntimeError(f"{path}: {exc}") from None
    return lines, zones


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.name: expected a non-empty string, got {json.dumps(value)[:60]}")
    return value


def reused_name(regions: Sequence[CountLine | Zone]) -> str | None:
    """The first name (alphabetically) that two of ``regions`` share, or None."""
    names = [r.name for r in regions]
    return min((n for n in names if names.count(n) > 1), default=None)


def _check_keys(item: Any, keys: set[str], where: str) -> None:
    if not isinstance(item, dict) or set(item) != keys:
        raise ValueError(f"{where}: expected exactly the keys {sorted(keys)}")


@dataclass
class LineCounter:
    """Crossings of ``line`` by tracks, per direction and class label."""

    line: CountLine
    hysteresis: float = LINE_HYSTERESIS
    counts: dict[str, Counter[str]] = field(default_factory=lambda: {"in": Counter(), "out": Counter()})
    _side: dict[int, int] = field(default_factory=dict)  # track id -> -1 left / +1 right of the line

    def update(self, tracked: Detections, removed_ids: list[int], points: np.ndarray | None = None
               ) -> list[dict[str, Any]]:
        """Count this frame's crossings; returns them as events ``{"line", "track_id", "label", "direction"}``.
        ``points``: ``anchors(tracked)`` when the caller has them."""
        for track_id in removed_ids:
            self._side.pop(track_id, None)
        if not len(tracked):
            return []
        (sx, sy), (ex, ey) = self.line.start, self.line.end
        dx, dy = ex - sx, ey - sy
        length = math.hypot(dx, dy)
        points = anchors(tracked) if points is None else points
        distance = (dx * (points[:, 1] - sy) - dy * (points[:, 0] - sx)) / length  # > 0: right of the line
        margin = self.hysteresis * (tracked.boxes[:, 2:] - tracked.boxes[:, :2]).min(axis=1)
        decided = np.flatnonzero(np.abs(distance) > margin)  # clear of the line: its side counts
        ids = tracked.track_ids[decided].tolist()
        sides = np.where(distance[decided] > 0, 1, -1).tolist()
        before = [self._side.get(i, 0) for i in ids]
        self._side.update(zip(ids, sides))
        events = []
        for k in (k for k, (b, now) in enumerate(zip(before, sides)) if b and b != now):
            i = int(decided[k])
            along = ((points[i, 0] - sx) * dx + (points[i, 1] - sy) * dy) / length**2  # 0..1 within the segment
            if 0.0 <= along <= 1.0:
                direction, label = ("in" if sides[k] > 0 else "out"), tracked.class_names[tracked.class_ids[i]]
                self.counts[direction][label] += 1
                events.append({"line": self.line.name, "track_id": ids[k], "label": label, "direction": direction})
        return events

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {direction: dict(sorted(c.items())) for direction, c in self.counts.items()}


@dataclass
class ZoneCounter:
    """Tracks inside ``zone``: who is in now and since when, and the visits that ended, per class label.

    A track that is lost for a moment (occluded) stays inside; its visit ends when it is seen outside (at
    that frame's time) or when the tracker drops it (at the last time it was seen inside).
    """

    zone: Zone
    visits: Counter[str] = field(default_factory=Counter)  # visits that ended
    dwell_total_s: Counter[str] = field(default_factory=Counter)
    dwell_max_s: dict[str, float] = field(default_factory=dict)
    _inside: dict[int, tuple[float, str]] = field(default_factory=dict)  # track id -> (entered_t, label)
    _seen: dict[int, float] = field(default_factory=dict)  # track id -> last time seen inside

    def update(self, tracked: Detections, removed_ids: list[int], t: float, points: np.ndarray | None = None
               ) -> list[dict[str, Any]]:
        """Follow this frame's tracks; returns events ``{"zone", "track_id", "label", "event": "enter"|"exit"}``
        (an exit also carries ``dwell_s``). ``points``: ``anchors(tracked)`` when the caller has them."""
        events = []
        for track_id in removed_ids:
            if track_id in self._inside:
                events.append(self._end(track_id, self._seen[track_id]))
        if len(tracked):
            inside = self.zone.contains(anchors(tracked) if points is None else points).tolist()
            ids = tracked.track_ids.tolist()
            ids_in = [i for i, is_in in zip(ids, inside) if is_in]
            for k in [k for k, i in enumerate(ids) if inside[k] != (i in self._inside)]:  # entering or leaving
                track_id = ids[k]
                if inside[k]:
                    label = tracked.class_names[tracked.class_ids[k]]
                    self._inside[track_id] = (t, label)
                    events.append({"zone": self.zone.name, "track_id": track_id, "label": label, "event": "enter"})
                else:
                    events.append(self._end(track_id, t))
            self._seen.update(dict.fromkeys(ids_in, t))
        return events

    @property
    def present(self) -> list[int]:
        """Ids of the tracks inside now."""
        return list(self._inside)

    def _end(self, track_id: int, t_end: float) -> dict[str, Any]:
        entered, label = self._inside.pop(track_id)
        self._seen.pop(track_id, None)
        dwell = max(t_end - entered, 0.0)
        self.visits[label] += 1
        self.dwell_total_s[label] += dwell
        self.dwell_max_s[label] = max(self.dwell_max_s.get(label, 0.0), dwell)
        return {"zone": self.zone.name, "track_id": track_id, "label": label, "event": "exit",
                "dwell_s": round(dwell, 3)}

    def snapshot(self, t: float) -> dict[str, Any]:
        """Occupancy and each present track's dwell so far, plus the finished visits' totals."""
        occupancy = Counter(label for _, label in self._inside.values())
        return {"occupancy": dict(sorted(occupancy.items())),
                "dwell_s": {str(k): round(t - v[0], 3) for k, v in self._inside.items()},
                "visits": dict(sorted(self.visits.items())),
                "mean_dwell_s": {k: round(self.dwell_total_s[k] / n, 3) for k, n in sorted(self.visits.items())},
                "max_dwell_s": {k: round(v, 3) for k, v in sorted(self.dwell_max_s.items())}}
