"""Exponential smoothing: ``ewma`` (level only) and ``holt-winters`` (level, trend, additive season).

Both are written in error-correction form: with the one-step error ``e_t = y_t - yhat_t``,

- ewma: ``l_t = l_{t-1} + alpha e_t``; forecast ``l_n``;
- holt-winters: ``yhat_t = l_{t-1} + b_{t-1} + s_{t-m}``, ``l_t = l_{t-1} + b_{t-1} + alpha e_t``,
  ``b_t = b_{t-1} + alpha beta e_t``, ``s_t = s_{t-m} + gamma e_t``; forecast
  ``l_n + h b_n + s_{n+h-m(k+1)}``, ``k = floor((h-1)/m)``. Without a full season of history (plus a few
  samples) it runs without the seasonal term: Holt's linear trend.

Bounds: the h-step forecast variance is approximated by ``sigma^2 (1 + sum_{j=1}^{h-1} c_j^2)`` with
``sigma^2`` the mean squared one-step error over the history and ``c_j`` the weight the model gives an error
j steps back (ewma ``alpha``; holt-winters ``alpha (1 + j beta) + gamma [j mod m = 0]``). It is exact when
the series follows the model's own innovations state-space form with Gaussian errors (Hyndman et al.,
*Forecasting with Exponential Smoothing*, 2008, ch. 6) and an approximation otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from inferno.predictor.forecast import Array, Forecast, forecast_with
from inferno.predictor.history import Samples

TREND_INIT_SAMPLES = 10
"""Holt's linear trend starts from the mean first difference over this many samples."""
SEASON_SMOOTHING = 96
"""The initial seasonal profile is smoothed over a circular window of m / SEASON_SMOOTHING slots (15 min a day)."""


def ewma_fit(y: Array, steps: int, alpha: float) -> tuple[float, float]:
    """Level after the series and the h-step variance ``sigma^2 (1 + (h-1) alpha^2)``."""
    values = y.tolist()
    level = values[0]
    sse = 0.0
    for obs in values[1:]:
        error = obs - level
        sse += error * error
        level += alpha * error
    sigma2 = sse / max(1, len(values) - 1)
    return level, sigma2 * (1.0 + (steps - 1) * alpha * alpha)


def holt_winters_fit(
    y: Array, steps: int, alpha: float, beta: float, gamma: float, season: int
) -> tuple[float, float, bool]:
    """Mean and variance ``steps`` ahead, and whether the seasonal model ran (else Holt's linear trend)."""
    n = y.size
    seasonal = season >= 2 and n >= season + max(6, TREND_INIT_SAMPLES)
    if seasonal:
        level, trend, profile = _seasonal_start(y, season)
        first = 0
    else:
        season = 1
        k = min(n, TREND_INIT_SAMPLES)
        level, trend, profile = float(y[0]), float(y[k - 1] - y[0]) / max(1, k - 1), [0.0]
        first = 1
        gamma = 0.0
    values = y.tolist()
    ab = alpha * beta
    sse, count = 0.0, 0
    for t in range(first, n):
        phase = t % season
        error = values[t] - (level + trend + profile[phase])
        if t >= first + 1:
            sse += error * error
            count += 1
        level += trend + alpha * error
        trend += ab * error
        profile[phase] += gamma * error
    sigma2 = sse / max(1, count)
    mean = level + steps * trend + profile[(n - 1 + steps) % season]
    j = np.arange(1, steps, dtype=np.float64)
    weights = alpha * (1.0 + j * beta) + gamma * (j % season == 0)
    return mean, sigma2 * (1.0 + float(np.sum(weights * weights))), seasonal


def _seasonal_start(y: Array, season: int) -> tuple[float, float, list[float]]:
    """Level before the first sample, trend, and seasonal profile, from the first one or two full seasons.

    Trend: the difference of the two season means over m (one season: the least-squares slope). Profile:
    the mean detrended value at each phase, smoothed circularly and centred on zero.
    """
    k = min(y.size // season, 2)
    blocks = y[: k * season].reshape(k, season)
    means = blocks.mean(axis=1)
    t = np.arange(season, dtype=np.float64)
    if k >= 2:
        trend = float(means[1] - means[0]) / season
    else:
        centred = t - t.mean()
        trend = float(np.dot(centred, blocks[0] - means[0]) / np.dot(centred, centred))
    before = float(means[0]) - trend * (season + 1) / 2.0
    times = np.arange(k * season, dtype=np.float64).reshape(k, season) + 1.0
    profile = (blocks - (before + trend * times)).mean(axis=0)
    width = max(1, season // SEASON_SMOOTHING)
    if width > 1:
        half = width // 2
        padded = np.concatenate([profile[-half:], profile, profile[:half]]) if half else profile
        profile = np.convolve(padded, np.ones(2 * half + 1) / (2 * half + 1), mode="valid")
    profile = profile - profile.mean()
    return before, trend, [float(v) for v in profile]


class EwmaPredictor:
    """Exponentially weighted moving average: a level, no trend."""

    name = "ewma"
    min_samples = 4

    def __init__(self, quantile: float = 0.9, alpha: float = 0.3) -> None:
        self.quantile = quantile
        self.alpha = alpha

    def forecast(self, samples: Samples | None, horizon_s: float) -> Forecast | None:
        """The smoothed level; see the module docstring for the bound."""

        def fit(y: Array, steps: int, interval_s: float) -> tuple[float, float, str]:
            mean, var = ewma_fit(y, steps, self.alpha)
            return mean, var, self.name

        return forecast_with(fit, self.name, self.min_samples, self.quantile, samples, horizon_s)


class HoltWintersPredictor:
    """Additive Holt-Winters: level, trend and a season of ``season_s`` seconds (one day)."""

    name = "holt-winters"
    min_samples = 6

    def __init__(
        self,
        quantile: float = 0.9,
        alpha: float = 0.2,
        beta: float = 0.02,
        gamma: float = 0.1,
        season_s: float = 86400.0,
    ) -> None:
        self.quantile = quantile
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.season_s = season_s

    def forecast(self, samples: Samples | None, horizon_s: float) -> Forecast | None:
        """Level + h trend + the season's value at the target time; see the module docstring for the bound."""

        def fit(y: Array, steps: int, interval_s: float) -> tuple[float, float, str]:
            season = max(1, round(self.season_s / interval_s))
            mean, var, seasonal = holt_winters_fit(y, steps, self.alpha, self.beta, self.gamma, season)
            label = self.name if seasonal else f"{self.name} (trend only: {y.size} of {season} samples)"
            return mean, var, label

        if not math.isfinite(self.season_s) or self.season_s <= 0:
            raise ValueError(f"season must be a positive number of seconds, not {self.season_s!r}")
        return forecast_with(fit, self.name, self.min_samples, self.quantile, samples, horizon_s)
