"""A constant-velocity Kalman filter over many boxes at once, in continuous time.

State per box: ``[cx, cy, w, h, vx, vy, vw, vh]`` with velocities in pixels per *second*, measurement
``[cx, cy, w, h]`` (BoT-SORT's xywh filter: width and height move independently, which suits shapes that
turn). Noise is proportional to the box size, as in SORT / ByteTrack / BoT-SORT, whose constants are tuned
per frame at 30 FPS; here the process noise grows with the time since the last update, so the same filter
serves a 30 FPS file, a 10 FPS stream and a live source that skips frames.

With a diagonal start, diagonal process and measurement noise and each coordinate driven only by its own
velocity, the 8x8 covariance never couples two coordinates: the filter is four independent (position,
velocity) filters, and the covariance of each is three numbers. So a covariance here is an (N, 3, 4)
array: rows position variance, position-velocity covariance, velocity variance; columns cx, cy, w, h.
Everything is elementwise over N boxes: 50 tracks cost a few numpy calls, no 8x8 algebra, no loops.
"""

from __future__ import annotations

import numpy as np

#: the frame period the reference noise constants were tuned at (ByteTrack / BoT-SORT: MOT17, 30 FPS)
REFERENCE_DT = 1.0 / 30.0
STD_POSITION = 1.0 / 20.0  # measurement and position process noise, per unit of box size
STD_VELOCITY = 1.0 / 160.0  # velocity process noise per reference frame, per unit of box size
PP, PV, VV = 0, 1, 2  # rows of a covariance


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) ``[w, h, w, h]`` of (N, >=4) ``[cx, cy, w, h, ...]`` rows: the scale every noise term takes."""
    return np.abs(boxes[:, [2, 3, 2, 3]])


class BoxKalmanFilter:
    """Predict / update N boxes; stateless (the tracker owns the arrays)."""

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) ``[cx, cy, w, h]`` -> means (N, 8) at rest and covariances (N, 3, 4)."""
        mean = np.zeros((len(measurements), 8))
        mean[:, :4] = measurements
        scale = _sizes(measurements)
        cov = np.zeros((len(measurements), 3, 4))
        cov[:, PP] = (2 * STD_POSITION * scale) ** 2
        cov[:, VV] = (10 * STD_VELOCITY / REFERENCE_DT * scale) ** 2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Both moved ``dt`` seconds ahead (new arrays). The process noise variance grows linearly with
        ``dt`` (a random walk), one reference frame's worth per ``REFERENCE_DT``."""
        if not len(mean) or dt <= 0:
            return mean.copy(), cov.copy()
        scale2 = _sizes(mean) ** 2 * (dt / REFERENCE_DT)
        pp, pv, vv = cov[:, PP], cov[:, PV], cov[:, VV]
        new_mean = mean.copy()
        new_mean[:, :4] += dt * mean[:, 4:]
        new_cov = np.empty_like(cov)
        new_cov[:, PP] = pp + dt * (2 * pv + dt * vv) + STD_POSITION**2 * scale2
        new_cov[:, PV] = pv + dt * vv
        new_cov[:, VV] = vv + (STD_VELOCITY / REFERENCE_DT) ** 2 * scale2
        return new_mean, new_cov

    def update(self, mean: np.ndarray, cov: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior of each box given its measurement (row i with row i)."""
        if not len(mean):
            return mean.copy(), cov.copy()
        pp, pv, vv = cov[:, PP], cov[:, PV], cov[:, VV]
        innovation_var = pp + (STD_POSITION * _sizes(mean)) ** 2
        gain_p, gain_v = pp / innovation_var, pv / innovation_var
        innovation = measurements - mean[:, :4]
        new_mean = np.concatenate([mean[:, :4] + gain_p * innovation, mean[:, 4:] + gain_v * innovation], axis=1)
        new_cov = np.stack([(1 - gain_p) * pp, (1 - gain_p) * pv, vv - gain_v * pv], axis=1)
        return new_mean, new_cov
