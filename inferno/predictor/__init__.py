"""Load forecasting: per-server series of request rate and token means, forecast some seconds ahead.

The controller keeps a :class:`History` (one series per server and quantity, on the control period's grid,
persisted with :meth:`History.to_dict`), adds each cycle's observations, and asks a :class:`Predictor`
(:func:`make_predictor` by name: ``last``, ``ewma``, ``holt-winters``, ``kalman``) for a :class:`Forecast`
at the horizon "variant start-up time + one control period". Every forecast is finite and >= 0, with an
upper bound at the configured quantile; short histories fall back to ``last``. docs/predictors.md.
"""

from inferno.predictor.catalog import DEFAULT_PREDICTOR, PREDICTORS, make_predictor
from inferno.predictor.forecast import Forecast, LastPredictor, Predictor, steps_ahead
from inferno.predictor.forecaster import Forecaster, forecast_report
from inferno.predictor.history import HISTORY_VERSION, QUANTITIES, History, Samples, series_key
from inferno.predictor.kalman import KalmanPredictor
from inferno.predictor.smoothing import EwmaPredictor, HoltWintersPredictor

__all__ = [
    "DEFAULT_PREDICTOR",
    "HISTORY_VERSION",
    "PREDICTORS",
    "QUANTITIES",
    "EwmaPredictor",
    "Forecast",
    "Forecaster",
    "History",
    "HoltWintersPredictor",
    "KalmanPredictor",
    "LastPredictor",
    "Predictor",
    "Samples",
    "forecast_report",
    "make_predictor",
    "series_key",
    "steps_ahead",
]
