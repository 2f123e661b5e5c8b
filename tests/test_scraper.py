"""Tests of the text exposition format and of the built-in scraper's evaluation of the collector's queries."""

from __future__ import annotations

import math

import pytest

from inferno.collector import build_queries
from inferno.config import Settings
from inferno.errors import ConfigError
from inferno.sim.exposition import Family, Histogram, Sample, parse, render
from inferno.sim.scraper import Scraper


def test_render_and_parse_round_trip() -> None:
    """vllm: names, escaped label values, NaN and +Inf survive a render and a parse; histograms are cumulative."""
    histogram = Histogram([0.1, 1.0])
    for value in (0.05, 0.5, 0.5, 3.0):
        histogram.observe(value)
    families = [
        Family("vllm:x_total", "counter", "x", (Sample("vllm:x_total", {"model_name": 'a"b\\c\nd'}, 3.0),)),
        Family("vllm:g", "gauge", "g", (Sample("vllm:g", {}, math.nan),)),
        Family("vllm:h", "histogram", "h", tuple(histogram.samples("vllm:h", {"engine": "0"}))),
    ]
    text = render(families)
    assert "# TYPE vllm:h histogram" in text and 'le="+Inf"' in text
    samples = {(s.name, s.labels.get("le", "")): s for s in parse(text)}
    assert samples["vllm:x_total", ""].labels["model_name"] == 'a"b\\c\nd'
    assert math.isnan(samples["vllm:g", ""].value)
    assert [samples["vllm:h_bucket", le].value for le in ("0.1", "1.0", "+Inf")] == [1.0, 3.0, 4.0]
    assert (samples["vllm:h_sum", ""].value, samples["vllm:h_count", ""].value) == (4.05, 4.0)
    with pytest.raises(ValueError, match="line 1"):
        parse("not a sample line at all {")


def _scraper_with(series: dict[str, list[tuple[float, float]]], labels: dict[str, str]) -> Scraper:
    scraper = Scraper(dict)
    for name, points in series.items():
        for t, v in points:
            scraper.add(t, [Sample(name, labels, v)])
    return scraper


def test_scraper_evaluates_the_collector_queries() -> None:
    """rate (with a counter reset), avg_over_time, deriv, by-label sums, selectors and 'or' alternatives."""
    pod = {"namespace": "llm", "pod": "chat-h100-abc-1", "model_name": "m"}
    counter = [(100.0 + i, 2.0 * i) for i in range(11)]
    counter[6:] = [(t, v - 12.0) for t, v in counter[6:]]  # a restart after t = 105
    scraper = _scraper_with(
        {
            "vllm:request_success_total": counter,
            "vllm:num_requests_waiting": [(100.0 + i, 3.0 + 0.5 * i) for i in range(11)],
            "vllm:num_requests_running": [(100.0 + i, float(i % 2)) for i in range(11)],
            "vllm:gpu_cache_usage_perc": [(100.0 + i, 0.25) for i in range(11)],
        },
        pod,
    )
    settings = Settings(metrics_window="10s", namespaces=("llm",))
    result = scraper.query_many(build_queries(settings), at=110.0)
    (requests,) = result["requests"]
    assert requests.labels == {"namespace": "llm", "pod": "chat-h100-abc-1"}
    assert requests.value == pytest.approx((8 + 8) / 9), "samples at 101..110 s: +8, a reset to 0, +8"
    assert result["growth"][0].value == pytest.approx(0.5)
    assert result["running"][0].value == pytest.approx(5 / 10), "the window (100, 110] holds 10 samples"
    assert result["kv_cache"][0].value == pytest.approx(0.25), "the pre-V1 name answers through 'or'"
    assert result["ttft_sum"] == []
    other = scraper.query_many(build_queries(Settings(metrics_window="10s", namespaces=("other",))), at=110.0)
    assert other["requests"] == []
    with pytest.raises(ConfigError, match="default query templates"):
        scraper.query_many({"x": "histogram_quantile(0.9, rate(x[1m]))"}, at=110.0)
