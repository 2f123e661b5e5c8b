"""A local Prometheus server (the ``prometheus`` binary) scraping given targets, for the demo and the tests.

Targets are kept in a file-discovery file, so they can change while it runs (Prometheus notices the
file at once). Series keep the labels the targets expose (``honor_labels``); a target's own labels
(e.g. ``namespace`` and ``pod``, as Kubernetes discovery would add them) fill in the rest. Prometheus
is ready within a second; a new target's first scrape lands within a few scrape intervals.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

__all__ = ["PrometheusProcess", "find_prometheus"]


def find_prometheus() -> str | None:
    """The path of the ``prometheus`` binary, or None when it is not installed."""
    found = shutil.which("prometheus")
    if found:
        return found
    return next((p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if Path(p).exists()), None)


class PrometheusProcess:
    """A running Prometheus on a free local port, scraping every ``scrape_interval_s``."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        scrape_interval_s: float = 1.0,
        static_targets: Sequence[str] = (),
        ready_timeout_s: float = 30.0,
    ) -> None:
        """Start it, keeping its configuration, data and log in ``directory``; RuntimeError when it fails."""
        self.directory = directory
        self.scrape_interval_s = scrape_interval_s
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._targets_file = directory / "targets.json"
        self._targets: dict[str, dict[str, str]] = {}
        self._write_targets()
        job: dict[str, object] = {
            "job_name": "vllm",
            "honor_labels": True,
            "scrape_timeout": f"{min(scrape_interval_s, 1.0):g}s",
            "file_sd_configs": [{"files": [str(self._targets_file)], "refresh_interval": "1s"}],
        }
        if static_targets:
            job["static_configs"] = [{"targets": list(static_targets)}]
        config = {
            "global": {"scrape_interval": f"{scrape_interval_s:g}s", "evaluation_interval": "1s"},
            "scrape_configs": [job],
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
        try:
            self.wait(lambda: self._get("/-/ready") is not None, ready_timeout_s, "Prometheus did not become ready")
        except RuntimeError:
            self.close()
            raise

    def _write_targets(self) -> None:
        groups = [{"targets": [address], "labels": labels} for address, labels in sorted(self._targets.items())]
        temporary = self._targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups))
        os.replace(temporary, self._targets_file)

    def add_target(self, address: str, labels: Mapping[str, str] | None = None) -> None:
        """Scrape ``host:port`` too, adding ``labels`` to its series where it does not set them."""
        self._targets[address] = dict(labels or {})
        self._write_targets()

    def remove_target(self, address: str) -> None:
        """Stop scraping ``host:port`` (its series go stale)."""
        self._targets.pop(address, None)
        self._write_targets()

    def close(self) -> None:
        """Stop Prometheus (again: nothing)."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)

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

    def wait(self, ready: Callable[[], bool], timeout: float, message: str) -> None:
        """Wait until ``ready()``; RuntimeError with the log's tail after ``timeout`` or when Prometheus exits."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError(f"{message}; see {self.log}:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)
