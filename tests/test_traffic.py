"""Tests of the traffic shapes: rates, arrival counts and token lengths match their specs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from inferno.errors import ConfigError
from inferno.sim.traffic import Traffic, TrafficSpec


def _traffic(arrivals: dict[str, object], **lengths: object) -> Traffic:
    return Traffic.from_dict({"arrivals": arrivals, **lengths})


def _count(traffic: Traffic, start: float, end: float, seed: int = 0) -> int:
    return len(traffic.requests(start, end, np.random.default_rng(seed)))


def test_steady_rate_and_count() -> None:
    """Steady 5 req/s: rate 5 everywhere, ~50,000 arrivals in 10,000 s (within 2%), in order and in the window."""
    traffic = _traffic({"shape": "steady", "rate_rps": 5})
    assert traffic.rate(123.4) == 5.0
    requests = traffic.requests(100.0, 10_100.0, np.random.default_rng(3))
    assert len(requests) == pytest.approx(50_000, rel=0.02)
    assert np.all(np.diff(requests.times) >= 0)
    assert requests.times[0] >= 100.0 and requests.times[-1] < 10_100.0
    gaps = np.diff(requests.times)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.03), "Poisson: exponential gaps (CV 1)"


def test_ramp_endpoints_and_count() -> None:
    """Ramp 2 -> 10 req/s from 100 s over 400 s: flat ends, midpoint 6, arrivals in the ramp ~ 2,400."""
    traffic = _traffic({"shape": "ramp", "from_rps": 2, "to_rps": 10, "start_s": 100, "duration_s": 400})
    rates = traffic.rate(np.array([0.0, 100.0, 300.0, 500.0, 10_000.0]))
    assert rates.tolist() == pytest.approx([2.0, 2.0, 6.0, 10.0, 10.0])
    counts = [_count(traffic, 100.0, 500.0, seed) for seed in range(5)]
    assert np.mean(counts) == pytest.approx(6.0 * 400, rel=0.03)


def test_diurnal_mean_peak_and_trough() -> None:
    """Diurnal: mean over a period = mean_rps, peak at peak_s, trough half a period later; counts per period match."""
    spec = {"shape": "diurnal", "mean_rps": 4, "amplitude": 0.75, "period_s": 3600, "peak_s": 900}
    traffic = _traffic(spec)
    grid = np.linspace(0.0, 3600.0, 36_001)[:-1]
    assert float(np.mean(traffic.rate(grid))) == pytest.approx(4.0, rel=1e-9)
    assert traffic.rate(900.0) == pytest.approx(7.0)
    assert traffic.rate(900.0 + 1800.0) == pytest.approx(1.0)
    assert traffic.rate(900.0 + 3600.0) == pytest.approx(7.0)
    assert _count(traffic, 0.0, 36_000.0) == pytest.approx(4 * 36_000, rel=0.02)
    peak_hour = np.sum((traffic.requests(0.0, 36_000.0, np.random.default_rng(1)).times % 3600) < 1800)
    assert peak_hour / (4 * 36_000) == pytest.approx(0.5 + 0.75 / math.pi, rel=0.03)


def test_burst_factor_and_rise_time() -> None:
    """A x3 burst over 600 s: half-way up after 60 s, x3 from 120 s to 480 s, and 3x the arrivals there."""
    base = {"shape": "steady", "rate_rps": 2}
    traffic = _traffic({"shape": "bursty", "base": base, "bursts": [{"at_s": 1000, "duration_s": 600, "factor": 3}]})
    assert traffic.rate(np.array([999.0, 1060.0, 1120.0, 1300.0, 1480.0, 1540.0, 1601.0])).tolist() == pytest.approx(
        [2.0, 4.0, 6.0, 6.0, 6.0, 4.0, 2.0]
    )
    plateau = np.mean([_count(traffic, 1120.0, 1480.0, s) for s in range(10)])
    before = np.mean([_count(traffic, 500.0, 860.0, s) for s in range(10)])
    assert plateau / before == pytest.approx(3.0, rel=0.05)
    short = _traffic({"shape": "bursty", "base": base, "bursts": [{"at_s": 0, "duration_s": 60, "factor": 5}]})
    assert short.rate(30.0) == pytest.approx(10.0), "a short burst rises over half its duration"


def test_flash_crowds_are_seeded_and_counted() -> None:
    """Random crowds: the same seed gives the same rate; ~per_day crowds a day; rate stays >= base."""
    spec = {
        "shape": "bursty",
        "base": {"shape": "steady", "rate_rps": 1},
        "flash_crowds": {"per_day": 3, "factor": 4, "duration_s": 600, "seed": 7},
    }
    a, b = _traffic(spec), _traffic(spec)
    grid = np.arange(0.0, 50 * 86_400.0, 30.0)
    rate_a = a.rate(grid)
    assert np.array_equal(rate_a, b.rate(grid))
    assert rate_a.min() == pytest.approx(1.0) and rate_a.max() >= 4.0, "overlapping crowds multiply"
    starts = np.count_nonzero((rate_a[1:] > 1.0) & (rate_a[:-1] <= 1.0))
    assert starts / 50 == pytest.approx(3.0, rel=0.2)
    busy = np.count_nonzero(rate_a > 1.0) / len(grid)
    assert busy == pytest.approx(3 * 600 / 86_400, rel=0.25)
    other = _traffic({**spec, "flash_crowds": {"per_day": 3, "factor": 4, "duration_s": 600, "seed": 8}})
    assert not np.array_equal(rate_a, other.rate(grid))


def test_trace_replay_counts_and_loop(tmp_path: Path) -> None:
    """A trace replays its rows (relative to the first); looping repeats it every span; its rate is per bin."""
    path = tmp_path / "trace.csv"
    rows = [(1000.0 + 0.5 * i, 100 + i, 10 + i % 3) for i in range(240)]  # 2 req/s for 120 s
    path.write_text("timestamp_s,input_tokens,output_tokens\n" + "".join(f"{t},{a},{b}\n" for t, a, b in rows))
    once = Traffic.from_dict({"arrivals": {"shape": "trace", "file": "trace.csv"}}, base_dir=tmp_path)
    got = once.requests(0.0, 1e9, np.random.default_rng(0))
    assert len(got) == 240 and got.times[0] == 0.0 and got.times[-1] == pytest.approx(119.5)
    assert got.in_tokens.tolist() == [r[1] for r in rows]
    assert len(once.requests(30.0, 60.0, np.random.default_rng(0))) == 60
    assert once.rate(30.0) == pytest.approx(2.0) and once.rate(500.0) == 0.0
    assert once.mean_tokens(10.0) == pytest.approx((100 + 59.5, np.mean([10 + i % 3 for i in range(120)])))
    looped = Traffic.from_dict({"arrivals": {"shape": "trace", "file": str(path), "loop": True}})
    assert len(looped.requests(0.0, 3 * 120.0, np.random.default_rng(0))) == 3 * 240
    assert looped.rate(120.0 * 5 + 30.0) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("length", "tolerance"),
    [
        ({"mean": 300}, 0.02),
        ({"mean": 300, "distribution": "lognormal", "sigma": 1.0}, 0.04),
        ({"mean": 99.6, "distribution": "fixed"}, 0.0),
    ],
)
def test_token_lengths_have_their_means(length: dict[str, object], tolerance: float) -> None:
    """Drawn input/output lengths have the spec's mean (fixed lengths are exactly the rounded mean)."""
    traffic = _traffic({"shape": "steady", "rate_rps": 20}, in_tokens=length, out_tokens=length)
    requests = traffic.requests(0.0, 1000.0, np.random.default_rng(2))
    expected = traffic.mean_tokens(0.0)
    assert expected[0] == (100.0 if length.get("distribution") == "fixed" else 300.0)
    assert np.mean(requests.in_tokens) == pytest.approx(expected[0], rel=tolerance, abs=1e-9)
    assert np.mean(requests.out_tokens) == pytest.approx(expected[1], rel=tolerance, abs=1e-9)
    assert requests.in_tokens.min() >= 1


def test_scalar_and_vector_rates_agree() -> None:
    """rate(t) on an array equals rate at each element, for a nested bursty shape."""
    traffic = _traffic(
        {
            "shape": "bursty",
            "base": {"shape": "ramp", "from_rps": 1, "to_rps": 3, "duration_s": 500},
            "bursts": [{"at_s": 100, "duration_s": 300, "factor": 2}, {"at_s": 200, "duration_s": 50, "factor": 0.5}],
        }
    )
    grid = np.linspace(0.0, 700.0, 71)
    assert traffic.rate(grid).tolist() == pytest.approx([traffic.rate(float(t)) for t in grid])


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"arrivals": {"shape": "steady", "rate_rps": 1, "burst": 2}}, "arrivals.steady.burst"),
        ({"arrivals": {"shape": "wave", "rate_rps": 1}}, "arrivals"),
        ({"arrivals": {"shape": "diurnal", "mean_rps": 1, "amplitude": 1.5}}, "arrivals.diurnal.amplitude"),
        ({"arrivals": {"shape": "bursty", "base": {"shape": "steady", "rate_rps": 1}}}, "arrivals.bursty"),
        ({"arrivals": {"shape": "trace", "file": "x.csv"}, "in_tokens": {"mean": 5}}, "(root)"),
        ({"arrivals": {"shape": "steady", "rate_rps": 1}, "out_tokens": {"mean": 0.5}}, "out_tokens.mean"),
    ],
)
def test_bad_specs_name_their_field(data: dict[str, object], field: str) -> None:
    """Unknown keys, unknown shapes, out-of-range values and contradictions are ConfigErrors naming the field."""
    with pytest.raises(ConfigError) as info:
        Traffic.from_dict(data)
    fields = [p.location or "(root)" for p in info.value.problems]
    assert field in fields


def test_spec_round_trips_and_is_frozen() -> None:
    """A spec dumps to JSON and validates back equal; it cannot be changed."""
    spec = TrafficSpec.model_validate(
        {
            "arrivals": {
                "shape": "bursty",
                "base": {"shape": "steady", "rate_rps": 1},
                "bursts": [{"at_s": 1, "duration_s": 2, "factor": 3}],
            }
        }
    )
    assert TrafficSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError, match="frozen"):
        spec.arrivals = spec.arrivals  # type: ignore[misc]
