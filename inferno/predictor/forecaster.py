"""The controller's use of the predictors: per server, record the observed rate and forecast it ahead.

The optimizer sizes each server for the upper bound of its request-rate forecast at the horizon that
matters (the variant start-up time plus one control period), so replicas are ready before the load
arrives. Token means are sized as observed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inferno.predictor.forecast import Forecast, Predictor
from inferno.predictor.history import History, series_key


@dataclass
class Forecaster:
    """A predictor, the history it reads, and the horizon it forecasts at."""

    predictor: Predictor
    history: History
    horizon_s: float

    def update(self, now_s: float, rates_rps: Mapping[str, float]) -> dict[str, Forecast]:
        """Record each server's observed rate at ``now_s``; its forecast (servers with a usable history only)."""
        forecasts = {}
        for server, rate in sorted(rates_rps.items()):
            key = series_key(server, "rate")
            self.history.add(key, now_s, rate)
            forecast = self.history.forecast(key, self.predictor, self.horizon_s, now_s)
            if forecast is not None:
                forecasts[server] = forecast
        return forecasts

    def state(self) -> dict[str, Any]:
        """The history as plain JSON-ready data (persisted beside the tuner state)."""
        return self.history.to_dict()


def forecast_report(observed_rps: Mapping[str, float], forecasts: Mapping[str, Forecast]) -> dict[str, Any]:
    """Per server: the observed rate, the forecast, its upper bound, the method and the horizon (cycle record)."""
    return {
        server: {
            "observed_rps": round(observed_rps[server], 6),
            "forecast_rps": round(f.value, 6),
            "upper_rps": round(f.upper, 6),
            "method": f.method,
            "horizon_s": f.horizon_s,
        }
        for server, f in sorted(forecasts.items())
    }
