"""``inferno demo``: the real control loop scales emulated vLLM servers under live load, and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from inferno.sim.demo import DemoOptions, demo_system, run_demo
from inferno.sim.prometheus_process import find_prometheus


def test_demo_scales_and_prints_a_summary() -> None:
    """20 s at x5 (100 emulated s): exit 0, a live table, a summary, and at least one replica count changed."""
    result = subprocess.run(
        [sys.executable, "-m", "inferno", "demo", "--duration-s", "20", "--time-scale", "5"],
        capture_output=True,
        text=True,
        timeout=180,
        env=os.environ | {"COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    source = "a real Prometheus" if find_prometheus() else "the built-in scraper"
    assert out.startswith(f"metrics: {source}")
    assert "emulating 100 s in 20 s (x5)" in out
    rows = [line for line in out.splitlines() if re.match(r"^\s+\d+\s+chat\s", line)]
    assert len(rows) >= 5, "a row per cycle (every 2 s of wall-clock time)"
    assert "summary:" in out and "accelerator spend: $" in out
    applied = int(re.search(r"actions applied: (\d+)", out).group(1))  # type: ignore[union-attr]
    changes = [(int(a), int(b)) for a, b in re.findall(r"replicas (\d+)->(\d+)", out.split("summary:")[1])]
    assert applied >= 1 and any(a != b for a, b in changes), out


def test_demo_without_prometheus_uses_the_scraper() -> None:
    """--no-prometheus: the built-in scraper feeds the collector; cycles see the servers' latencies."""
    lines: list[str] = []
    summary = run_demo(DemoOptions(duration_s=12, time_scale=5, use_prometheus=False, seed=3), lines.append)
    assert summary.metrics_source.startswith("the built-in scraper")
    assert lines[0] == f"metrics: {summary.metrics_source}"
    assert sum(summary.cycles.values()) >= 4 and summary.emulated_s == pytest.approx(60, abs=6)
    chat = summary.servers[0]
    assert chat.name == "chat" and chat.mean_ttft_ms is not None and chat.mean_itl_ms is not None
    assert 0 < chat.mean_itl_ms < 200 and chat.requests > 50
    assert summary.spend_dollars > 0


def test_the_demo_system_scales_time_consistently() -> None:
    """At time scale X the controller's system has times / X and rates x X; costs and capacity stay."""
    one, ten = demo_system(1.0), demo_system(10.0)
    p1, p10 = one.model_data.models[0].perf_parms, ten.model_data.models[0].perf_parms
    assert p1 is not None and p10 is not None
    assert (p10.alpha, p10.beta, p10.gamma) == pytest.approx((p1.alpha / 10, p1.beta / 10, p1.gamma / 10))
    t1, t10 = (
        one.service_class_data.service_classes[0].model_targets[0],
        ten.service_class_data.service_classes[0].model_targets[0],
    )
    assert (t10.slo_ttft, t10.slo_itl) == pytest.approx((t1.slo_ttft / 10, t1.slo_itl / 10))
    assert one.accelerator_data == ten.accelerator_data and one.capacity_data == ten.capacity_data
