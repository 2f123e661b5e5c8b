"""A real Prometheus server for the test session, scraping a fake vLLM fleet every second.

The ``prometheus`` binary comes from the Debian package (``make prometheus``); tests that need it are
skipped, saying so, where it is missing. One server serves the whole session: its first scrape lands a
few seconds after start, so suites add their pods early and wait once with :meth:`PrometheusServer.settle`.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.vllm_exporter import FakeVllmFleet

SCRAPE_INTERVAL_S = 1.0


class PrometheusServer:
    """A running Prometheus and the fleet it scrapes."""

    def __init__(self, binary: str, directory: Path, fleet: FakeVllmFleet) -> None:
        self.fleet = fleet
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S:g}s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "vllm",
                    "honor_labels": True,
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [fleet.address]}],
                }
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = directory / "prometheus.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={directory / 'prometheus.yml'}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait(lambda: self._get("/-/ready") is not None, 30, "Prometheus did not become ready")

    def close(self) -> None:
        """Stop Prometheus."""
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return bytes(response.read())
        except OSError:
            return None

    def query(self, promql: str) -> list[dict[str, object]]:
        """An instant query's result (empty when Prometheus does not answer)."""
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        return list(json.loads(body)["data"]["result"]) if body else []

    def _wait(self, ready: Callable[[], bool], timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"{message}; see {self.log}:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def settle(self, namespace: str, series: int, window_s: float) -> None:
        """Wait until ``series`` request counters of ``namespace`` are scraped and old enough to fill a window."""
        selector = f'vllm:request_success_total{{namespace="{namespace}"}}'
        self._wait(lambda: len(self.query(selector)) >= series, 30, f"{namespace}: fewer than {series} series")
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
    binary = shutil.which("prometheus") or next(
        (p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if Path(p).exists()), None
    )
    if binary is None:
        pytest.skip("the prometheus binary is not installed (make prometheus, or apt-get install prometheus)")
    server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), vllm_fleet)
    yield server
    server.close()
