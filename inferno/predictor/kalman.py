"""``kalman``: a local linear trend state-space model, filtered, then propagated h steps.

Model, one step per grid slot::

    y_t     = l_t + eps_t                       eps  ~ N(0, r)    (observation noise)
    l_{t+1} = l_t + b_t + xi_t                  xi   ~ N(0, q_l)  (level noise)
    b_{t+1} = b_t + zeta_t                      zeta ~ N(0, q_b)  (slope noise)

State x = [l, b], F = [[1, 1], [0, 1]], H = [1, 0], Q = diag(q_l, q_b), R = r. The filter starts from the
first two samples (l = y_1, b = y_1 - y_0, P = [[r, r], [r, 2r + q_l]]) and runs the usual predict/update
over the rest. The h-step forecast is ``l_n + h b_n`` with variance
``P00 + 2h P01 + h^2 P11 + h q_l + q_b (h-1) h (2h-1) / 6 + r``: the state covariance propagated h steps,
plus the noise of the observation to come.

Noise: unless given, (r, q_l, q_b) come from the moments of second differences at several lags k,
``d_k(t) = y_{t+2k} - 2 y_{t+k} + y_t``, whose variance under the model is
``V(k) = 6 r + 2k q_l + q_b k (2k^2 + 1) / 3`` -- linear in the three unknowns. They are fitted by
non-negative least squares over k = 1, 2, 3, 4, 6, 8, ... up to a quarter of the history, so both fast
noise (small k) and slow drifts (large k) are seen; each lag is weighted by the square root of its
number of independent differences over its fitted V(k) (a few reweighting rounds). Plug-in estimates
ignore their own uncertainty, so bounds run slightly narrow on short histories.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from inferno.predictor.forecast import Array, Forecast, forecast_with
from inferno.predictor.history import Samples

FIT_ROUNDS = 3
"""Reweighting rounds of the noise fit: weights 1 / (fitted V(k)) times the square root of the independent
differences at lag k, so that neither the noisy long lags nor a lag that happened to come out small dominate."""
NOISE_FLOOR = 1e-12
"""Smallest observation-noise variance, relative to the series' largest value squared."""


def noise_moments(y: Array) -> tuple[float, float, float]:
    """(r, q_l, q_b) fitted to the second-difference variances V(k) (module docstring); all >= 0."""
    n = y.size
    rows, targets, spans = [], [], []
    for k in _lags(n):
        if n - 2 * k < 1:
            break
        d = y[2 * k :] - 2.0 * y[k:-k] + y[: -2 * k]
        rows.append([6.0, 2.0 * k, k * (2.0 * k * k + 1.0) / 3.0])
        targets.append(float(np.mean(d * d)))
        spans.append(k)
    a = np.asarray(rows)
    v = np.asarray(targets)
    top = float(v.max()) if v.size else 0.0
    if top <= 0:
        return 0.0, 0.0, 0.0
    span = np.asarray(spans, dtype=np.float64)
    independent = np.sqrt(np.maximum(1.0, (n - 2 * span) / (2 * span)))
    fitted, x = v, (0.0, 0.0, 0.0)
    for _ in range(FIT_ROUNDS):
        weight = independent / np.maximum(fitted, 1e-9 * top)
        x = _nonnegative_lstsq(a * weight[:, None], v * weight)
        fitted = a @ np.asarray(x)
    return x


def _lags(n: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and 1.5 times them) up to n / 4, always 1 and 2."""
    out, power = [1, 2], 2
    while True:
        for k in (3 * power // 2, 2 * power):
            if k > n // 4:
                return out
            out.append(k)
        power *= 2


def _nonnegative_lstsq(a: Array, v: Array) -> tuple[float, float, float]:
    """argmin |a x - v| over x >= 0 for three unknowns: the best feasible least-squares fit over column subsets."""
    best: tuple[float, Array] = (float(np.dot(v, v)), np.zeros(3))
    for size in (1, 2, 3):
        for cols in itertools.combinations(range(3), size):
            sub = a[:, list(cols)]
            x, *_ = np.linalg.lstsq(sub, v, rcond=None)
            if np.any(x < 0) or not np.all(np.isfinite(x)):
                continue
            residual = sub @ x - v
            cost = float(np.dot(residual, residual))
            if cost < best[0]:
                full = np.zeros(3)
                full[list(cols)] = x
                best = (cost, full)
    r, q_l, q_b = best[1]
    return float(r), float(q_l), float(q_b)


def kalman_fit(y: Array, steps: int, r: float, q_l: float, q_b: float) -> tuple[float, float]:
    """Filter ``y`` with the local linear trend model; the mean and variance of the observation ``steps`` ahead."""
    values = y.tolist()
    level, slope = values[1], values[1] - values[0]
    p00, p01, p11 = r, r, 2.0 * r + q_l
    for obs in values[2:]:
        # predict
        level += slope
        p00 = p00 + 2.0 * p01 + p11 + q_l
        p01 = p01 + p11
        p11 = p11 + q_b
        # update
        s = p00 + r
        k0, k1 = p00 / s, p01 / s
        error = obs - level
        level += k0 * error
        slope += k1 * error
        p11 -= k1 * p01
        p01 *= 1.0 - k0
        p00 *= 1.0 - k0
    h = float(steps)
    mean = level + h * slope
    var = p00 + 2.0 * h * p01 + h * h * p11 + h * q_l + q_b * (h - 1.0) * h * (2.0 * h - 1.0) / 6.0 + r
    return mean, var


class KalmanPredictor:
    """Local linear trend (level and slope) Kalman filter; noise estimated from the history unless given.

    ``obs_var``, ``level_var`` and ``slope_var`` are r, q_l and q_b in the series' own units squared; each
    one given replaces its estimate.
    """

    name = "kalman"
    min_samples = 10

    def __init__(
        self,
        quantile: float = 0.9,
        obs_var: float | None = None,
        level_var: float | None = None,
        slope_var: float | None = None,
    ) -> None:
        self.quantile = quantile
        self.fixed = (obs_var, level_var, slope_var)

    def forecast(self, samples: Samples | None, horizon_s: float) -> Forecast | None:
        """Level + h slope; the bound from the state covariance propagated h steps (module docstring)."""
        scale2 = 1.0
        if samples is not None and len(samples):
            top = float(np.max(samples.values))
            scale2 = top * top if math.isfinite(top) and top > 0 else 1.0

        def fit(y: Array, steps: int, interval_s: float) -> tuple[float, float, str]:
            estimated = noise_moments(y) if None in self.fixed else (0.0, 0.0, 0.0)
            r, q_l, q_b = (e if f is None else f / scale2 for e, f in zip(estimated, self.fixed, strict=True))
            r = max(r, NOISE_FLOOR)
            mean, var = kalman_fit(y, steps, r, max(q_l, 0.0), max(q_b, 0.0))
            return mean, var, self.name

        return forecast_with(fit, self.name, self.min_samples, self.quantile, samples, horizon_s)
