"""Tests of the load predictors on synthetic series with known trend, season and noise."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferno.config import PredictorSettings, load_settings
from inferno.errors import ConfigError
from inferno.predictor import (
    PREDICTORS,
    Forecast,
    History,
    HoltWintersPredictor,
    KalmanPredictor,
    Samples,
    make_predictor,
    series_key,
)

DT = 60.0
"""Sample interval of every synthetic series: one control period of 60 s."""
DAY = 1440
"""Samples in a day at DT."""
Generator = Callable[[np.random.Generator, int], np.ndarray]


def samples(values: np.ndarray | list[float]) -> Samples:
    """A fully observed series on the DT grid."""
    y = np.asarray(values, dtype=np.float64)
    return Samples(y, DT, (y.size - 1) * DT, int(y.size))


def mape(forecasts: list[float], actual: list[float]) -> float:
    """Mean absolute percentage error, in %."""
    f, a = np.asarray(forecasts), np.asarray(actual)
    return float(np.mean(np.abs(f - a) / a) * 100)


# --- plug-in by name and settings --------------------------------------------------------------


def test_unknown_predictor_lists_the_choices() -> None:
    """An unknown name is a ConfigError that lists every predictor."""
    with pytest.raises(ConfigError) as caught:
        make_predictor("prophet")
    message = str(caught.value)
    assert "prophet" in message
    for name in ("last", "ewma", "holt-winters", "kalman"):
        assert name in message
    assert sorted(PREDICTORS) == ["ewma", "holt-winters", "kalman", "last"]


def test_settings_reach_the_predictor() -> None:
    """make_predictor passes the quantile and smoothing weights of the settings."""
    config = PredictorSettings(quantile=0.8, hw_alpha=0.5, hw_beta=0.1, hw_gamma=0.3, season_s=3600)
    predictor = make_predictor("holt-winters", config)
    assert isinstance(predictor, HoltWintersPredictor)
    assert (predictor.quantile, predictor.alpha, predictor.beta, predictor.gamma) == (0.8, 0.5, 0.1, 0.3)
    assert predictor.season_s == 3600
    assert make_predictor("ewma", PredictorSettings(ewma_alpha=0.7)).alpha == 0.7  # type: ignore[attr-defined]


def test_predictor_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """INFERNO_PREDICTOR__<NAME> sets the nested predictor settings; defaults are last at 0.9."""
    assert load_settings().predictor == PredictorSettings()
    assert (PredictorSettings().method, PredictorSettings().quantile) == ("last", 0.9)
    monkeypatch.setenv("INFERNO_PREDICTOR__METHOD", "kalman")
    monkeypatch.setenv("INFERNO_PREDICTOR__QUANTILE", "0.95")
    loaded = load_settings().predictor
    assert (loaded.method, loaded.quantile, loaded.season_s) == ("kalman", 0.95, 86400.0)
    monkeypatch.setenv("INFERNO_PREDICTOR__QUANTILE", "1.5")
    with pytest.raises(ConfigError, match="INFERNO_PREDICTOR__QUANTILE"):
        load_settings()


# --- accuracy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "season_s", "label"),
    [
        ("kalman", 86400.0, "kalman"),
        ("holt-winters", 86400.0, "holt-winters (trend only: 200 of 1440 samples)"),
        ("holt-winters", 24 * DT, "holt-winters"),
    ],
)
@pytest.mark.parametrize("steps", [1, 10, 60])
def test_noiseless_linear_trend_is_forecast_within_2_percent(
    name: str, season_s: float, label: str, steps: int
) -> None:
    """On y = 10 + 0.5 t, kalman and holt-winters (trend-only and seasonal) forecast h steps ahead within 2%."""
    y = 10.0 + 0.5 * np.arange(200.0)
    forecast = make_predictor(name, PredictorSettings(season_s=season_s)).forecast(samples(y), steps * DT)
    assert forecast is not None
    truth = 10.0 + 0.5 * (199 + steps)
    assert abs(forecast.value / truth - 1) < 0.02
    assert abs(forecast.value / truth - 1) < 1e-9  # in fact exact
    assert forecast.method == label


def test_holt_winters_learns_a_daily_sinusoid_in_two_seasons() -> None:
    """Daily sinusoid + 3% noise, jittered timestamps: after 2 days holt-winters is within 10% MAPE.

    At a 10-minute horizon every method is close to the noise (about 3%); at 3 hours holt-winters stays
    within 10% while last, which ignores the season, is over 20% off.
    """
    rng = np.random.default_rng(7)
    history = History.from_settings(PredictorSettings(), DT)
    assert history.max_samples == 2 * DAY
    t = np.arange(3 * DAY, dtype=np.float64)
    truth = 100.0 + 50.0 * np.sin(2 * np.pi * t / DAY)
    observed = truth + rng.normal(0.0, 3.0, t.size)
    jitter = rng.uniform(-20.0, 20.0, t.size)
    hw, last = make_predictor("holt-winters"), make_predictor("last")
    results: dict[tuple[str, int], list[float]] = {}
    actual: dict[int, list[float]] = {10: [], 180: []}
    for i in range(t.size):
        history.add("s/rate", t[i] * DT + jitter[i], observed[i])
        if i < 2 * DAY - 1 or (i - 2 * DAY + 1) % 30 or i + 180 >= t.size:
            continue
        for steps in (10, 180):
            actual[steps].append(float(observed[i + steps]))
            for predictor in (hw, last):
                forecast = history.forecast("s/rate", predictor, steps * DT)
                assert forecast is not None
                results.setdefault((predictor.name, steps), []).append(forecast.value)
    assert len(actual[10]) == 43
    assert history.samples("s/rate").observed == 2 * DAY  # type: ignore[union-attr]
    assert mape(results["holt-winters", 10], actual[10]) < 10.0
    assert mape(results["holt-winters", 180], actual[180]) < 10.0
    assert mape(results["last", 180], actual[180]) > 20.0


@pytest.mark.parametrize("name", ["kalman", "holt-winters"])
def test_last_lags_visibly_on_a_steep_ramp(name: str) -> None:
    """Load doubling in an hour, 10-minute horizon: trend methods within 1.5% MAPE, last and ewma over 5%."""
    errors: dict[str, list[float]] = {"last": [], "ewma": [], name: []}
    for seed in range(30):
        rng = np.random.default_rng(seed)
        y = 50.0 + 50.0 * np.arange(100.0) / 60.0 + rng.normal(0.0, 1.5, 100)
        truth = 50.0 + 50.0 * 109 / 60.0
        for method in errors:
            forecast = make_predictor(method).forecast(samples(y), 10 * DT)
            assert forecast is not None
            errors[method].append(abs(forecast.value - truth) / truth * 100)
    assert np.mean(errors[name]) < 1.5
    assert np.mean(errors["last"]) > 5.0
    assert np.mean(errors["ewma"]) > 5.0
    assert np.mean(errors["last"]) > 4 * np.mean(errors[name])


# --- coverage of the upper bound ---------------------------------------------------------------


def _random_walk(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random walk with N(0, 1) steps from 200."""
    return 200.0 + np.cumsum(rng.normal(0.0, 1.0, n))


def _local_level(rng: np.random.Generator, n: int) -> np.ndarray:
    """The ewma model's own process: y_t = l_{t-1} + e_t, l_t = l_{t-1} + 0.3 e_t, e ~ N(0, 4)."""
    e = rng.normal(0.0, 2.0, n)
    level = 200.0 + 0.3 * np.concatenate([[0.0], np.cumsum(e)[:-1]])
    return level + e


def _seasonal_trend(rng: np.random.Generator, n: int) -> np.ndarray:
    """The holt-winters model's own process (alpha 0.2, beta 0.02, gamma 0.1), season of 24 samples."""
    level, trend, season = 200.0, 0.0, list(10.0 * np.sin(2 * np.pi * np.arange(24) / 24))
    out = []
    for t, e in enumerate(rng.normal(0.0, 2.0, n)):
        out.append(level + trend + season[t % 24] + e)
        level += trend + 0.2 * e
        trend += 0.2 * 0.02 * e
        season[t % 24] += 0.1 * e
    return np.asarray(out)


def _local_linear_trend(rng: np.random.Generator, n: int) -> np.ndarray:
    """The kalman model's own process: r = 4, q_l = 0.25, q_b = 4e-4."""
    slope = np.cumsum(rng.normal(0.0, 0.02, n))
    level = 200.0 + np.cumsum(np.concatenate([[0.0], slope[:-1]]) + rng.normal(0.0, 0.5, n))
    return level + rng.normal(0.0, 2.0, n)


def _white_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """A constant 200 plus N(0, 4)."""
    return 200.0 + rng.normal(0.0, 2.0, n)


@pytest.mark.parametrize(
    ("name", "generator", "quantile"),
    [
        ("last", _random_walk, 0.9),
        ("ewma", _local_level, 0.9),
        ("holt-winters", _seasonal_trend, 0.9),
        ("kalman", _local_linear_trend, 0.9),
        ("kalman", _white_noise, 0.9),
        ("kalman", _local_linear_trend, 0.75),
    ],
)
def test_upper_bound_covers_the_requested_quantile(name: str, generator: Generator, quantile: float) -> None:
    """Over 1000 Gaussian series from the method's own model, the value 10 steps on is below upper in q +- 0.05."""
    n, steps, draws = 300, 10, 1000
    predictor = make_predictor(name, PredictorSettings(quantile=quantile, season_s=24 * DT))
    covered = 0
    for draw in range(draws):
        y = generator(np.random.default_rng(1000 + draw), n + steps)
        forecast = predictor.forecast(samples(y[:n]), steps * DT)
        assert forecast is not None and forecast.method == name
        covered += bool(y[n - 1 + steps] <= forecast.upper)
    assert abs(covered / draws - quantile) <= 0.05


# --- safety ---------------------------------------------------------------------------------------

_VALUE = st.one_of(st.just(0.0), st.floats(0.0, 1e9), st.sampled_from([1e-300, 5e-324, 1e6, 1e9]))


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(_VALUE, min_size=1, max_size=60),
    name=st.sampled_from(sorted(PREDICTORS)),
    horizon_s=st.floats(0.0, 7200.0),
    season_s=st.sampled_from([600.0, 86400.0]),
)
def test_forecasts_are_finite_and_non_negative(
    values: list[float], name: str, horizon_s: float, season_s: float
) -> None:
    """Any finite non-negative series (zeros, spikes): a finite forecast >= 0 with upper >= value."""
    predictor = make_predictor(name, PredictorSettings(season_s=season_s))
    forecast = predictor.forecast(samples(values), horizon_s)
    assert forecast is not None
    assert math.isfinite(forecast.value) and math.isfinite(forecast.upper)
    assert forecast.value >= 0.0
    assert forecast.upper >= forecast.value
    assert forecast.horizon_s == horizon_s


@pytest.mark.parametrize("name", ["ewma", "holt-winters", "kalman"])
def test_short_history_falls_back_to_last(name: str) -> None:
    """With fewer samples than the method needs it answers last and says so; with none it answers None."""
    history = History(DT, 100)
    assert history.forecast("x/rate", make_predictor(name), 600.0) is None
    assert make_predictor(name).forecast(None, 600.0) is None
    history.add("x/rate", 0.0, 10.0)
    history.add("x/rate", 60.0, 12.0)
    forecast = history.forecast("x/rate", make_predictor(name), 600.0)
    assert forecast is not None
    assert forecast.method == "last (fallback: 2 samples)"
    assert forecast.value == 12.0
    # random-walk bound: 12 + z_0.9 * sqrt(10 steps * 2^2)
    assert forecast.upper == pytest.approx(12.0 + 1.2815516 * math.sqrt(40.0), rel=1e-6)
    single = make_predictor(name).forecast(samples([5.0]), 60.0)
    assert single == Forecast(5.0, 5.0, 60.0, "last (fallback: 1 samples)")


def test_nan_inf_and_negative_observations_are_skipped_and_counted() -> None:
    """NaN, inf and negative values (and NaN times) never enter a series; each one is counted."""
    clean, dirty = History(DT, 100), History(DT, 100)
    for i in range(30):
        clean.add("s/rate", i * DT, 100.0 + i)
        dirty.add("s/rate", i * DT, 100.0 + i)
        if i % 10 == 5:
            assert not dirty.add("s/rate", i * DT + 1, math.nan)
            assert not dirty.add("s/rate", i * DT + 2, math.inf)
            assert not dirty.add("s/rate", i * DT + 3, -1.0)
    assert not dirty.add("s/rate", math.nan, 1.0)
    assert dirty.rejected("s/rate") == 10
    assert clean.rejected("s/rate") == 0
    assert dirty.rejected("unknown") == 0
    for name in PREDICTORS:
        assert dirty.forecast("s/rate", make_predictor(name), 600.0) == clean.forecast(
            "s/rate", make_predictor(name), 600.0
        )
    only_nan = History(DT, 100)
    only_nan.add("s/rate", 0.0, math.nan)
    assert only_nan.samples("s/rate") is None
    assert only_nan.rejected("s/rate") == 1


# --- history ----------------------------------------------------------------------------------------


def test_irregular_timestamps_are_resampled_onto_the_grid() -> None:
    """Jittered times land in their slot, a slot's values are averaged, gaps are interpolated."""
    history = History(DT, 10)
    history.add("k", 1.0, 10.0)  # slot 0
    history.add("k", 58.0, 20.0)  # slot 1
    history.add("k", 62.0, 30.0)  # slot 1 again: averaged to 25
    history.add("k", 241.0, 55.0)  # slot 4: slots 2 and 3 interpolated
    got = history.samples("k")
    assert got is not None
    assert got.values.tolist() == [10.0, 25.0, 35.0, 45.0, 55.0]
    assert (got.observed, got.end_s, got.interval_s) == (3, 240.0, DT)
    history.add("k", 125.0, 40.0)  # late observation fills slot 2
    assert history.samples("k").values.tolist() == [10.0, 25.0, 40.0, 47.5, 55.0]  # type: ignore[union-attr]


def test_history_is_bounded_and_restarts_after_a_long_gap() -> None:
    """A series keeps max_samples slots; a gap longer than that starts it afresh; too old values are counted."""
    history = History(DT, 5)
    for i in range(8):
        history.add("k", i * DT, float(i))
    got = history.samples("k")
    assert got is not None and got.values.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert not history.add("k", 0.0, 1.0)
    assert history.rejected("k") == 1
    history.add("k", 100 * DT, 9.0)
    assert history.samples("k").values.tolist() == [9.0]  # type: ignore[union-attr]
    assert History.from_settings(PredictorSettings(history_s=3600), 60.0).max_samples == 60
    with pytest.raises(ConfigError):
        History(0.0, 5)


def test_seed_accepts_an_unsorted_range_query() -> None:
    """seed() sorts a range query, keeps the finite non-negative points and returns how many it kept."""
    history = History(DT, 100)
    kept = history.seed("s/rate", [120.0, 0.0, 60.0, 180.0, math.nan], [3.0, 1.0, 2.0, math.nan, 5.0])
    assert kept == 3
    assert history.rejected("s/rate") == 2
    assert history.samples("s/rate").values.tolist() == [1.0, 2.0, 3.0]  # type: ignore[union-attr]
    assert history.keys() == ["s/rate"]
    assert series_key("chat", "rate") == "chat/rate"
    history.drop("s/rate")
    assert history.keys() == []


def test_round_trip_through_json_gives_identical_forecasts() -> None:
    """to_dict -> JSON -> from_dict keeps every slot, gap and counter: forecasts are identical."""
    rng = np.random.default_rng(3)
    history = History(DT, 600)
    for i in range(500):
        if i % 37 == 0:
            continue  # a missing cycle
        history.add("a/rate", i * DT + rng.uniform(-15, 15), 50 + 10 * math.sin(i / 40) + rng.normal(0, 1))
        history.add("a/in_tokens", i * DT, 512.0 + rng.normal(0, 20))
    history.add("a/rate", 501 * DT, math.nan)
    data = history.to_dict()
    restored = History.from_dict(json.loads(json.dumps(data)))
    assert restored.to_dict() == data
    assert restored.rejected("a/rate") == 1
    for name in PREDICTORS:
        for key in ("a/rate", "a/in_tokens"):
            before = history.forecast(key, make_predictor(name), 900.0)
            after = restored.forecast(key, make_predictor(name), 900.0)
            assert before == after and before is not None and before.method.startswith(name)


def test_from_dict_rejects_malformed_state() -> None:
    """A wrong version or inconsistent slots are a ConfigError."""
    good = History(DT, 10)
    good.add("k", 0.0, 1.0)
    data = good.to_dict()
    with pytest.raises(ConfigError, match="version"):
        History.from_dict({**data, "version": 99})
    broken = json.loads(json.dumps(data))
    broken["series"]["k"]["counts"] = [0]
    with pytest.raises(ConfigError, match="series"):
        History.from_dict(broken)


def test_staleness_is_added_to_the_horizon() -> None:
    """Forecasting at a later now_s than the last sample lengthens the horizon by the gap."""
    history = History(DT, 100)
    for i in range(20):
        history.add("k", i * DT, 10.0 + i)
    kalman = KalmanPredictor()
    fresh = history.forecast("k", kalman, 600.0, now_s=19 * DT)
    stale = history.forecast("k", kalman, 600.0, now_s=24 * DT)
    assert fresh is not None and stale is not None
    assert (fresh.horizon_s, stale.horizon_s) == (600.0, 900.0)
    assert fresh.value == pytest.approx(39.0) and stale.value == pytest.approx(44.0)
