"""A real Prometheus server for the test session, scraping a fake vLLM fleet (and any added target) every second.

The ``prometheus`` binary comes from the Debian package (``make prometheus``); tests that need it are
skipped, saying so, where it is missing. One server serves the whole session: its first scrape lands a
few seconds after start, so suites add their pods early and wait once with :meth:`PrometheusServer.settle`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferno.sim.prometheus_process import PrometheusProcess, find_prometheus
from tests.support.vllm_exporter import FakeVllmFleet

SCRAPE_INTERVAL_S = 1.0


class PrometheusServer(PrometheusProcess):
    """A running Prometheus, the fleet it scrapes, and any other targets added with ``add_target``."""

    def __init__(self, binary: str, directory: Path, fleet: FakeVllmFleet) -> None:
        self.fleet = fleet
        super().__init__(binary, directory, scrape_interval_s=SCRAPE_INTERVAL_S, static_targets=[fleet.address])

    def settle(self, namespace: str, series: int, window_s: float) -> None:
        """Wait until ``series`` request counters of ``namespace`` are scraped and old enough to fill a window."""
        selector = f'vllm:request_success_total{{namespace="{namespace}"}}'
        self.wait(lambda: len(self.query(selector)) >= series, 30, f"{namespace}: fewer than {series} series")
        time.sleep(window_s + 1.5 * SCRAPE_INTERVAL_S)


@pytest.fixture(scope="session")
def vllm_fleet() -> Iterator[FakeVllmFleet]:
    """Fake vLLM pods served on one endpoint for the whole session."""
    fleet = FakeVllmFleet()
    yield fleet
    fleet.close()


@pytest.fixture(scope="session")
def prometheus(vllm_fleet: FakeVllmFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping ``vllm_fleet`` every second; skipped where the binary is missing."""
    binary = find_prometheus()
    if binary is None:
        pytest.skip("the prometheus binary is not installed (make prometheus, or apt-get install prometheus)")
    server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), vllm_fleet)
    yield server
    server.close()
