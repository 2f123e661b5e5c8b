"""The predictors by name, built from the settings."""

from __future__ import annotations

from collections.abc import Callable

from inferno.config import PredictorSettings
from inferno.errors import ConfigError
from inferno.predictor.forecast import LastPredictor, Predictor
from inferno.predictor.kalman import KalmanPredictor
from inferno.predictor.smoothing import EwmaPredictor, HoltWintersPredictor

PREDICTORS: dict[str, Callable[[PredictorSettings], Predictor]] = {
    LastPredictor.name: lambda s: LastPredictor(s.quantile),
    EwmaPredictor.name: lambda s: EwmaPredictor(s.quantile, s.ewma_alpha),
    HoltWintersPredictor.name: lambda s: HoltWintersPredictor(
        s.quantile, s.hw_alpha, s.hw_beta, s.hw_gamma, s.season_s
    ),
    KalmanPredictor.name: lambda s: KalmanPredictor(s.quantile),
}
"""Predictor factories by name."""

DEFAULT_PREDICTOR = LastPredictor.name
"""The predictor used when none is named: purely reactive, as before forecasting existed."""


def make_predictor(name: str, settings: PredictorSettings | None = None) -> Predictor:
    """Predictor ``name`` configured by ``settings`` (defaults when none); ConfigError listing the names if unknown."""
    try:
        factory = PREDICTORS[name]
    except KeyError:
        raise ConfigError(f"unknown predictor {name!r}; choose one of: {', '.join(PREDICTORS)}") from None
    return factory(settings or PredictorSettings())
