"""The Predictor protocol, the Forecast it returns, the reactive ``last`` method and the shared safety net.

Every method works the same way around its own model (:func:`forecast_with`): no samples -> None; fewer
observed samples than the method needs -> the ``last`` forecast, labelled ``last (fallback: N samples)``;
otherwise the model's mean and variance on the series divided by its largest value (so that no square
overflows), scaled back, clipped at 0, with ``upper = value + z_q * sd`` (never below ``value``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from inferno.predictor.history import Samples

Array = npt.NDArray[np.float64]

Fit = Callable[[Array, int, float], tuple[float, float, str]]
"""A model: (values scaled to at most 1, steps ahead, interval s) -> (mean, forecast variance, label)."""


@dataclass(frozen=True)
class Forecast:
    """A forecast of one series ``horizon_s`` seconds after its last sample."""

    value: float
    """Point forecast (the mean); finite and >= 0."""
    upper: float
    """Upper prediction bound at the predictor's quantile; finite and >= ``value``."""
    horizon_s: float
    method: str
    """The method that made it, with a note when it fell back or ran reduced, e.g. ``last (fallback: 2 samples)``."""


class Predictor(Protocol):
    """Forecasts a series some seconds ahead, with an upper bound at a quantile."""

    name: str
    quantile: float

    def forecast(self, samples: Samples | None, horizon_s: float) -> Forecast | None:
        """The forecast ``horizon_s`` after the last sample; None when there is no sample."""
        ...


def steps_ahead(horizon_s: float, interval_s: float) -> int:
    """Grid steps covering ``horizon_s`` (rounded up, at least 1); ValueError on a negative or NaN horizon."""
    if not (math.isfinite(horizon_s) and horizon_s >= 0):
        raise ValueError(f"forecast horizon must be a finite number of seconds >= 0, not {horizon_s!r}")
    return max(1, math.ceil(horizon_s / interval_s - 1e-9))


def last_fit(y: Array, steps: int, interval_s: float) -> tuple[float, float, str]:
    """The last sample; variance ``h * mean(diff^2)``, the h-step spread of a random walk (naive method)."""
    del interval_s
    if y.size < 2:
        return float(y[-1]), 0.0, "last"
    step_var = float(np.mean(np.diff(y) ** 2))
    return float(y[-1]), steps * step_var, "last"


def forecast_with(
    fit: Fit, name: str, min_samples: int, quantile: float, samples: Samples | None, horizon_s: float
) -> Forecast | None:
    """Run ``fit`` on ``samples`` with every safety rule of the module docstring."""
    if samples is None or len(samples) == 0:
        return None
    steps = steps_ahead(horizon_s, samples.interval_s)
    y = np.asarray(samples.values, dtype=np.float64)
    scale = float(np.max(y))
    if not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    y = y / scale
    available = min(samples.observed, len(samples))
    mean, var, label = math.nan, math.nan, name
    if available >= min_samples:
        mean, var, label = fit(y, steps, samples.interval_s)
    if not (math.isfinite(mean) and math.isfinite(var)):
        note = f"{available} samples" if available < min_samples else "numerical failure"
        mean, var, _ = last_fit(y, steps, samples.interval_s)
        label = "last" if name == "last" else f"last (fallback: {note})"
    z = NormalDist().inv_cdf(quantile)
    value = _finite(max(0.0, mean) * scale)
    upper = _finite(max(mean, mean + z * math.sqrt(max(0.0, var)), 0.0) * scale)
    return Forecast(value, max(value, upper), float(horizon_s), label)


def _finite(x: float) -> float:
    """``x`` clipped to the largest finite float."""
    return min(x, sys.float_info.max)


class LastPredictor:
    """Reactive: the last observation; its bound is that of a random walk with the series' step spread."""

    name = "last"
    min_samples = 1

    def __init__(self, quantile: float = 0.9) -> None:
        self.quantile = quantile

    def forecast(self, samples: Samples | None, horizon_s: float) -> Forecast | None:
        """The last sample, bound ``z_q * sqrt(h * mean(diff^2))`` above it."""
        return forecast_with(last_fit, self.name, self.min_samples, self.quantile, samples, horizon_s)
