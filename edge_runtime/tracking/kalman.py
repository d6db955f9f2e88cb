"""A constant-velocity Kalman filter over many boxes at once, in continuous time.

State per box: ``[cx, cy, w, h, vx, vy, vw, vh]`` with velocities in pixels per *second*, measurement
``[cx, cy, w, h]`` (BoT-SORT's xywh filter: width and height move independently, which suits shapes that
turn). Noise is proportional to the box size, as in SORT / ByteTrack / BoT-SORT, whose constants are tuned
per frame at 30 FPS; here the process noise grows with the time since the last update, so the same filter
serves a 30 FPS file, a 10 FPS stream and a live source that skips frames.

Every operation works on arrays of N boxes (means (N, 8), covariances (N, 8, 8)): a frame with 50 tracks
costs a few numpy calls, not 50 Python loops.
"""

from __future__ import annotations

import numpy as np

#: the frame period the reference noise constants were tuned at (ByteTrack / BoT-SORT: MOT17, 30 FPS)
REFERENCE_DT = 1.0 / 30.0
STD_POSITION = 1.0 / 20.0  # measurement and position process noise, per unit of box size
STD_VELOCITY = 1.0 / 160.0  # velocity process noise per reference frame, per unit of box size


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) ``[w, h, w, h]`` of (N, >=4) ``[cx, cy, w, h, ...]`` rows: the scale every noise term takes."""
    return np.abs(boxes[:, [2, 3, 2, 3]])


class BoxKalmanFilter:
    """Predict / update / gate N boxes; stateless (the tracker owns the arrays)."""

    def initiate(self, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) ``[cx, cy, w, h]`` -> means (N, 8) at rest and covariances (N, 8, 8)."""
        n = len(measurements)
        mean = np.zeros((n, 8))
        mean[:, :4] = measurements
        scale = _sizes(measurements)
        std = np.concatenate([2 * STD_POSITION * scale, 10 * STD_VELOCITY * scale / REFERENCE_DT], axis=1)
        return mean, _diagonal(std**2)

    def predict(self, mean: np.ndarray, cov: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Both moved ``dt`` seconds ahead (new arrays). The process noise variance grows linearly with
        ``dt`` (a random walk), one reference frame's worth per ``REFERENCE_DT``."""
        if not len(mean) or dt <= 0:
            return mean.copy(), cov.copy()
        motion = np.eye(8)
        motion[:4, 4:] = dt * np.eye(4)
        scale = _sizes(mean)
        std = np.concatenate([STD_POSITION * scale, STD_VELOCITY * scale / REFERENCE_DT], axis=1)
        noise = _diagonal(std**2 * (dt / REFERENCE_DT))
        return mean @ motion.T, motion @ cov @ motion.T + noise

    def project(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measurement-space means (N, 4) and covariances (N, 4, 4), measurement noise included."""
        std = STD_POSITION * _sizes(mean)
        return mean[:, :4], cov[:, :4, :4] + _diagonal(std**2)

    def update(self, mean: np.ndarray, cov: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior of each box given its measurement (row i with row i)."""
        if not len(mean):
            return mean.copy(), cov.copy()
        projected, s = self.project(mean, cov)
        # gain K = P H^T S^-1, with H picking the first four states: solve S K^T = (P H^T)^T
        cross = cov[:, :, :4]  # P H^T, (N, 8, 4)
        gain = np.linalg.solve(s, cross.transpose(0, 2, 1)).transpose(0, 2, 1)
        innovation = measurements - projected
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
        return new_mean, new_cov


def _diagonal(values: np.ndarray) -> np.ndarray:
    """(N, K) -> (N, K, K) diagonal matrices."""
    out = np.zeros((*values.shape, values.shape[-1]))
    idx = np.arange(values.shape[-1])
    out[:, idx, idx] = values
    return out
