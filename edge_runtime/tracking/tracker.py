"""ByteTrack-style multi-object tracking: a Kalman filter per box and two-stage association.

ByteTrack (Zhang et al., ECCV 2022) keeps the low-score detections a detector would throw away and uses
them to continue existing tracks (an occluded or blurred object scores low), while only high-score
detections start tracks. Each update, with the tracks first moved to the frame's time:

1. confirmed and lost tracks <- high-score detections (IoU, or IoU x score as ByteTrack with ``fuse_score``);
2. confirmed tracks still unmatched <- low-score detections (plain IoU, a stricter threshold);
3. tentative tracks <- the high-score detections left; ``min_hits`` hits in a row confirm a track and only
   then give it an id, so a short false positive never uses one up;
4. lost tracks <- the high-score detections still left that lie ahead on the track's path (``_recover``);
5. the high-score detections still left start tentative tracks; a confirmed track unmatched becomes lost,
   and a lost track is dropped ``max_lost_s`` seconds after it was last seen.

Differences from the reference implementation, on purpose:

- time, not frame counts: motion and expiry are in seconds (``update(dets, t)``), so a live source that
  drops stale frames, or a 10 FPS stream, is tracked as well as a 30 FPS file;
- per class: a detection continues only a track of its own class;
- dropped tracks are forgotten (ByteTrack's ``removed_stracks`` list grows for ever on a long run);
- the returned boxes are the detector's own (with the track's id), not the filter's estimate.

The association is a linear assignment (``lap.lapjv``: 1.7 MB wheel with aarch64 builds, against
33 MB for scipy; docs/tracking.md has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..detections import Detections
from ..errors import EdgeRuntimeError
from .kalman import BoxKalmanFilter

TENTATIVE, TRACKED, LOST = 0, 1, 2
DEFAULT_HIGH_SCORE = 0.5  # ByteTrack's track_thresh, used when neither the settings nor a detector give one


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) ``x1, y1, x2, y2`` boxes."""
    ax1, ay1, ax2, ay2 = (a[:, i:i + 1] for i in range(4))
    bx1, by1, bx2, by2 = b.T
    w = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    h = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)


def _xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def _load_lap():
    try:
        import lap
    except ImportError:
        raise EdgeRuntimeError("tracking needs the 'lap' package (linear assignment, 1.7 MB): "
                               "pip install 'edge-runtime[track]'") from None
    return lap


@dataclass(frozen=True)
class TrackerSettings:
    """What the tracker accepts. Scores are the detector's; IoUs are the least overlap that associates."""

    high_score: float | None = None  # detections at or above this start and continue tracks; None: the detector's
    low_score: float = 0.1  # detections from here up to high_score only continue confirmed tracks
    max_lost_s: float = 2.0  # a track unseen this long is dropped (ByteTrack: 30 frames, 1 s at 30 FPS)
    first_iou: float = 0.2  # stage 1 (on IoU x score with fuse_score)
    # ByteTrack multiplies the IoU by the detection's score (tuned on YOLOX, whose scores run high); with
    # NanoDet's lower scores that made matching so strict that ids fragmented (docs/tracking.md)
    fuse_score: bool = False
    second_iou: float = 0.5  # stage 2, low-score detections
    tentative_iou: float = 0.3  # stage 3, confirming a tentative track
    min_hits: int = 3  # detections in a row that confirm a track and give it an id (ByteTrack: 2)
    # stage 4: a lost track may take a detection left over that lies ahead of its prediction by up to this
    # fraction of the distance it was predicted to travel while lost (plus half a box): the centre of a box
    # sliding behind an occluder slows down while the box shrinks, so the prediction falls behind (0: off)
    recover_gate: float = 2.0
    duplicate_iou: float = 0.85  # a lost track this close to a confirmed one is the same object: dropped

    def __post_init__(self) -> None:
        high = 1.0 if self.high_score is None else self.high_score
        if not 0 <= self.low_score <= high <= 1:
            raise ValueError(f"tracker scores need 0 <= low_score ({self.low_score}) <= high_score "
                             f"({self.high_score}) <= 1")
        if not self.max_lost_s >= 0:
            raise ValueError(f"max_lost_s must be 0 or more seconds, got {self.max_lost_s}")
        for name in ("first_iou", "second_iou", "tentative_iou", "duplicate_iou"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be above 0 and at most 1, got {getattr(self, name)}")
        if not (isinstance(self.min_hits, int) and self.min_hits >= 1):
            raise ValueError(f"min_hits must be an integer of 1 or more, got {self.min_hits!r}")
        if not self.recover_gate >= 0:
            raise ValueError(f"recover_gate must be 0 or more, got {self.recover_gate}")

    def resolved(self, score_threshold: float) -> TrackerSettings:
        """These settings with a detector's ``score_threshold`` as the high score when none was given."""
        if self.high_score is not None:
            return self
        return replace(self, high_score=score_threshold, low_score=min(self.low_score, score_threshold))


class ByteTracker:
    """Tracks the objects of successive frames; ``update`` returns each frame's tracked detections.

    >>> tracker = ByteTracker(TrackerSettings(high_score=0.35))
    >>> tracked = tracker.update(dets, t=frame_index / fps)   # t: seconds, any origin, non-decreasing
    >>> tracked.track_ids                                       # one id per returned box, stable over frames

    The detector should keep detections down to ``settings.low_score`` (its score threshold lowered):
    the low ones are what carries a track through an occlusion. Only detections that belong to a
    confirmed track come back; ids start at 1 and are never reused.
    """

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings = (settings or TrackerSettings()).resolved(DEFAULT_HIGH_SCORE)
        self._lap = _load_lap()
        self._kf = BoxKalmanFilter()
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 3, 4))
        self._class = np.zeros(0, np.int64)
        self._state = np.zeros(0, np.int8)
        self._id = np.zeros(0, np.int64)  # 0 until confirmed
        self._hits = np.zeros(0, np.int64)  # detections associated so far
        self._first_seen = np.zeros(0)
        self._last_seen = np.zeros(0)
        self._t: float | None = None
        self._next_id = 1
        self.removed_ids: list[int] = []  # ids of the confirmed tracks the last update dropped

    def __len__(self) -> int:
        """Tracks held (tentative, confirmed and lost): bounded by the objects of the last ``max_lost_s``."""
        return len(self._state)

    @property
    def ids_issued(self) -> int:
        """Confirmed tracks so far: ids 1..ids_issued."""
        return self._next_id - 1

    @property
    def active_ids(self) -> np.ndarray:
        """Ids of the confirmed tracks seen in the last update."""
        return self._id[self._state == TRACKED].copy()

    def update(self, dets: Detections, t: float) -> Detections:
        """Associate ``dets`` (one frame, taken at ``t`` seconds) with the tracks; returns the detections
        that belong to confirmed tracks, in the input order, with ``track_ids``."""
        s = self.settings
        if self._t is not None and t < self._t:
            # the clock went back (a file played again, a reused tracker): take it as restarted, so motion and
            # expiry go on from here instead of freezing until it catches up
            self._first_seen += t - self._t
            self._last_seen += t - self._t
            self._t = t
        dt = 0.0 if self._t is None else t - self._t
        first_frame = self._t is None
        self._t = t
        if len(self._state):
            # a track not seen last frame keeps its position velocity but not its size change (ByteTrack)
            self._mean[self._state != TRACKED, 6:] = 0.0
            self._mean, self._cov = self._kf.predict(self._mean, self._cov, dt)
        boxes = dets.boxes.astype(np.float64)
        scores = dets.scores.astype(np.float64)
        classes = dets.class_ids.astype(np.int64)
        # a box with no area (clipped to the frame's edge) or not finite (a broken model) can never overlap:
        # as a track it would only fill the filter and the recovery gate with 0/0
        sizes = boxes[:, 2:] - boxes[:, :2]
        keep = (scores >= s.low_score) & np.isfinite(boxes).all(axis=1) & (sizes > 0).all(axis=1)
        high = np.flatnonzero(keep & (scores >= s.high_score))
        low = np.flatnonzero(keep & (scores < s.high_score))
        det_track = np.full(len(dets), -1)  # row of the track each detection went to
        track_hit = np.zeros(len(self._state), bool)
        # every track against every detection once; a stage takes its rows and columns
        iou = box_iou(_xywh_to_xyxy(self._mean), boxes)
        iou[self._class[:, None] != classes[None, :]] = -1.0  # never within a cost limit

        def associate(rows: np.ndarray, det_idx: np.ndarray, min_iou: float, fuse: bool) -> np.ndarray:
            if not len(rows) or not len(det_idx):
                return np.zeros((0, 2), np.int64)
            similarity = iou[rows][:, det_idx]
            cost = 1.0 - (similarity * scores[det_idx][None, :] if fuse else similarity)
            pairs = self._assign(cost, 1 - min_iou)
            pairs = np.stack([rows[pairs[:, 0]], det_idx[pairs[:, 1]]], axis=1)
            det_track[pairs[:, 1]] = pairs[:, 0]
            track_hit[pairs[:, 0]] = True
            return pairs

        first = associate(np.flatnonzero(self._state != TENTATIVE), high, s.first_iou, fuse=s.fuse_score)
        second = associate(np.flatnonzero((self._state == TRACKED) & ~track_hit), low, s.second_iou, fuse=False)
        third = associate(np.flatnonzero(self._state == TENTATIVE), high[det_track[high] < 0], s.tentative_iou,
                          fuse=s.fuse_score)
        fourth = self._recover(np.flatnonzero((self._state == LOST) & ~track_hit), high[det_track[high] < 0], boxes,
                               classes)
        det_track[fourth[:, 1]] = fourth[:, 0]
        track_hit[fourth[:, 0]] = True
        matched = np.concatenate([first, second, third, fourth])
        unmatched_tracks = np.flatnonzero(~track_hit)
        if len(matched):
            r, d = matched[:, 0], matched[:, 1]
            self._mean[r], self._cov[r] = self._kf.update(self._mean[r], self._cov[r], _xyxy_to_xywh(boxes[d]))
            self._hits[r] += 1
            confirm = r[(self._state[r] == TENTATIVE) & (self._hits[r] >= s.min_hits)]
            self._id[confirm] = np.arange(self._next_id, self._next_id + len(confirm))
            self._next_id += len(confirm)
            self._state[r[self._state[r] != TENTATIVE]] = TRACKED
            self._state[confirm] = TRACKED
            self._last_seen[r] = self._t
        drop = np.zeros(len(self._state), bool)
        drop[unmatched_tracks[self._state[unmatched_tracks] == TENTATIVE]] = True
        self._state[unmatched_tracks[self._state[unmatched_tracks] == TRACKED]] = LOST
        drop |= (self._state == LOST) & (self._t - self._last_seen > s.max_lost_s)
        drop |= self._duplicates(det_track, iou)
        self.removed_ids = self._id[drop & (self._id > 0)].tolist()
        out_rows = det_track.copy()
        # rows shift when tracks are dropped: map surviving rows to their new index
        new_index = np.cumsum(~drop) - 1
        out_rows[out_rows >= 0] = np.where(drop[out_rows[out_rows >= 0]], -1, new_index[out_rows[out_rows >= 0]])
        self._keep(~drop)

        start = high[(det_track[high] < 0)]
        if len(start):
            confirmed = first_frame or s.min_hits <= 1
            self._start(boxes[start], classes[start], confirmed=confirmed)
            if confirmed:  # the first frame's tracks are confirmed at once, as in ByteTrack
                out_rows[start] = np.arange(len(self._state) - len(start), len(self._state))
        shown = np.flatnonzero(out_rows >= 0)
        shown = shown[self._id[out_rows[shown]] > 0]  # tentative tracks are not shown
        ids = self._id[out_rows[shown]]
        return replace(dets, boxes=dets.boxes[shown], scores=dets.scores[shown], class_ids=dets.class_ids[shown],
                       track_ids=ids.astype(np.int64))

    def _assign(self, cost: np.ndarray, cost_limit: float) -> np.ndarray:
        """(K, 2) (row, column) pairs of the minimum-cost assignment leaving pairs costlier than ``cost_limit``
        unassigned. When every row's cheapest column within the limit is a different column, that is the
        optimum (no assignment costs less than each row's minimum) and the solver is not needed: the usual
        frame, where objects are apart."""
        best = cost.argmin(axis=1)
        rows = np.flatnonzero(cost[np.arange(len(cost)), best] <= cost_limit)
        if not len(rows) or np.bincount(best[rows]).max() == 1:
            return np.stack([rows, best[rows]], axis=1)
        _, x, _ = self._lap.lapjv(cost, extend_cost=True, cost_limit=cost_limit)
        rows = np.flatnonzero(x >= 0)
        return np.stack([rows, x[rows]], axis=1).astype(np.int64)

    def _recover(self, rows: np.ndarray, det_idx: np.ndarray, boxes: np.ndarray, classes: np.ndarray
                 ) -> np.ndarray:
        """Stage 4 pairs (track row, detection index): lost tracks and the high-score detections left, same
        class, areas within a factor 4, where the detection lies *ahead* of the prediction along the track's
        motion by at most half a box size plus ``recover_gate`` times the distance the track was predicted to
        travel while lost, and aside of its path by at most half a box size plus half that distance. What this
        stage makes up for is a velocity measured while the box was being cut by an occluder (the centre
        slows down and drifts): the gate grows with how far the track went, never behind it, so a track at
        rest cannot jump to another object."""
        gate = self.settings.recover_gate
        if not gate or not len(rows) or not len(det_idx):
            return np.zeros((0, 2), np.int64)
        pred = self._mean[rows, :4]
        det = _xyxy_to_xywh(boxes[det_idx])
        size = np.sqrt(np.abs(pred[:, 2] * pred[:, 3]))[:, None]
        velocity = self._mean[rows, 4:6]
        speed = np.hypot(velocity[:, 0], velocity[:, 1])[:, None]
        heading = np.divide(velocity, speed, out=np.zeros_like(velocity), where=speed > 0)
        dx, dy = det[None, :, 0] - pred[:, None, 0], det[None, :, 1] - pred[:, None, 1]
        along = dx * heading[:, :1] + dy * heading[:, 1:]
        # a track at rest has no heading (both projections above are 0): its whole distance counts as across
        across = np.where(speed > 0, np.abs(dx * heading[:, 1:] - dy * heading[:, :1]), np.hypot(dx, dy))
        travel = gate * speed * (self._t - self._last_seen[rows])[:, None]
        ahead, aside = 0.5 * size + travel, 0.5 * size + 0.5 * travel
        cost = np.maximum(across / aside, np.where(along > 0, along / ahead, -along / (0.5 * size)))
        ratio = (det[None, :, 2] * det[None, :, 3]) / np.maximum(pred[:, None, 2] * pred[:, None, 3], 1e-9)
        cost[(self._class[rows][:, None] != classes[det_idx][None, :]) | (ratio > 4) | (ratio < 0.25)] = 2.0
        pairs = self._assign(cost, 1.0)
        return np.stack([rows[pairs[:, 0]], det_idx[pairs[:, 1]]], axis=1).astype(np.int64)

    def _duplicates(self, det_track: np.ndarray, iou: np.ndarray) -> np.ndarray:
        """Lost tracks overlapping a confirmed one of the same class by more than ``duplicate_iou``: the
        object was picked up by a new track; keep whichever has been tracked longer. When that is the lost
        one, it takes over the newer track's filter and this frame's detection (``det_track`` is updated),
        so the object keeps being shown, under its older id.

        Every confirmed track was matched this frame, so its box is taken as its detection's, and the overlap
        read from ``iou`` (every track's prediction against every detection, other classes at -1), which a lost
        track's box still is: no second IoU computation."""
        drop = np.zeros(len(self._state), bool)
        matched = np.flatnonzero(det_track >= 0)
        matched = matched[self._state[det_track[matched]] == TRACKED]
        lost = np.flatnonzero(self._state == LOST)
        if not len(matched) or not len(lost):
            return drop
        overlap = iou[lost][:, matched]
        for j, i in zip(*np.nonzero(overlap > self.settings.duplicate_iou)):
            a, b = det_track[matched[i]], lost[j]
            if drop[a] or drop[b] or self._state[b] != LOST:  # each track is dropped or takes over once
                continue
            age_a = self._last_seen[a] - self._first_seen[a]
            age_b = self._last_seen[b] - self._first_seen[b]
            if age_a >= age_b:
                drop[b] = True
                continue
            drop[a] = True
            self._mean[b], self._cov[b], self._state[b] = self._mean[a], self._cov[a], TRACKED
            self._last_seen[b], self._hits[b] = self._last_seen[a], self._hits[b] + self._hits[a]
            det_track[det_track == a] = b
        return drop

    def _keep(self, mask: np.ndarray) -> None:
        self._mean, self._cov, self._class = self._mean[mask], self._cov[mask], self._class[mask]
        self._state, self._id, self._hits = self._state[mask], self._id[mask], self._hits[mask]
        self._first_seen, self._last_seen = self._first_seen[mask], self._last_seen[mask]

    def _start(self, boxes: np.ndarray, classes: np.ndarray, confirmed: bool) -> None:
        mean, cov = self._kf.initiate(_xyxy_to_xywh(boxes))
        n = len(boxes)
        ids = np.arange(self._next_id, self._next_id + n) if confirmed else np.zeros(n, np.int64)
        if confirmed:
            self._next_id += n
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._class = np.concatenate([self._class, classes])
        self._state = np.concatenate([self._state, np.full(n, TRACKED if confirmed else TENTATIVE, np.int8)])
        self._id = np.concatenate([self._id, ids])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        self._first_seen = np.concatenate([self._first_seen, np.full(n, self._t)])
        self._last_seen = np.concatenate([self._last_seen, np.full(n, self._t)])
