"""Tests of the Prometheus client: time budget, retries, auth, errors; against a scripted HTTP server."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_api_client import PrometheusConnect
from urllib3.util import Retry

from inferno.config import Settings
from inferno.errors import CollectError, ConfigError
from inferno.prometheus import Prometheus, connect

VECTOR = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"namespace": "llm", "pod": "a-1-2"}, "value": [1.0, "2.5"]},
            {"metric": {"namespace": "llm", "pod": "b-1-2"}, "value": [1.0, "NaN"]},
        ],
    },
}


class ScriptedPrometheus:
    """Answers /api/v1/query from a script of (status, delay) replies, then with VECTOR; records requests."""

    def __init__(self) -> None:
        self.script: list[tuple[int, float]] = []
        self.requests: list[dict[str, str]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                scripted.requests.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
                status, delay = scripted.script.pop(0) if scripted.script else (200, 0.0)
                time.sleep(delay)
                body = json.dumps(VECTOR if status == 200 else {"status": "error", "error": "scripted"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedPrometheus]:
    """A scripted Prometheus stand-in."""
    server = ScriptedPrometheus()
    yield server
    server.close()


def _client(url: str, **settings: object) -> Prometheus:
    client = connect(Settings(prometheus_url=url, **settings))  # type: ignore[arg-type]
    assert client is not None
    return client


def test_samples_keep_labels_and_nan(scripted: ScriptedPrometheus) -> None:
    """A vector comes back per series; NaN stays NaN (the collector decides what it means)."""
    result = _client(scripted.url).query_many({"q": "up"}, at=1000.0)
    assert [s.labels["pod"] for s in result["q"]] == ["a-1-2", "b-1-2"]
    assert result["q"][0].value == 2.5
    assert math.isnan(result["q"][1].value)
    assert "time=1000.000" in scripted.requests[0]["path"]


def test_no_url_means_no_client() -> None:
    """Without INFERNO_PROMETHEUS_URL there is no Prometheus client."""
    assert connect(Settings()) is None


def test_unreachable_prometheus_is_a_collect_error() -> None:
    """A closed port fails fast with a transient CollectError naming the URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    client = _client(url, prometheus_retries=1, prometheus_timeout=2.0)
    start = time.monotonic()
    with pytest.raises(CollectError, match=f"Prometheus at {url} failed the q query 2 times") as info:
        client.query_many({"q": "up"}, at=0.0)
    assert info.value.transient
    assert time.monotonic() - start < 2.0


def test_a_slow_prometheus_costs_at_most_its_timeout(scripted: ScriptedPrometheus) -> None:
    """Replies slower than the budget: CollectError after ~timeout, not after every query's worth."""
    scripted.script = [(200, 3.0)] * 3
    client = _client(scripted.url, prometheus_timeout=0.5, prometheus_retries=2)
    start = time.monotonic()
    with pytest.raises(CollectError, match=r"did not answer within 0.5 s"):
        client.query_many({"a": "up", "b": "up", "c": "up"}, at=0.0)
    assert time.monotonic() - start < 1.5


def test_server_errors_are_retried_within_the_budget(scripted: ScriptedPrometheus) -> None:
    """Two 503s then an answer: three requests, pauses of 0.2 s then 0.4 s, and a result."""
    scripted.script = [(503, 0.0), (503, 0.0)]
    pauses: list[float] = []
    client = Prometheus(PrometheusConnect(scripted.url, retry=Retry(0)), timeout=5.0, retries=2, sleep=pauses.append)
    result = client.query_many({"q": "up"}, at=0.0)
    assert len(result["q"]) == 2
    assert len(scripted.requests) == 3
    assert pauses == [pytest.approx(0.2), pytest.approx(0.4)]


def test_server_errors_beyond_the_retries_fail_the_collection(scripted: ScriptedPrometheus) -> None:
    """503 on every try: CollectError saying HTTP 503 after retries + 1 requests."""
    scripted.script = [(503, 0.0)] * 5
    with pytest.raises(CollectError, match="failed the q query 2 times: HTTP 503"):
        _client(scripted.url, prometheus_retries=1).query_many({"q": "up"}, at=0.0)
    assert len(scripted.requests) == 2


def test_a_rejected_query_is_a_config_error(scripted: ScriptedPrometheus) -> None:
    """HTTP 400 (bad PromQL) is not retried and names the query."""
    scripted.script = [(400, 0.0)]
    with pytest.raises(ConfigError, match=r"prometheus: q query: rejected: 'rate\(x\['"):
        _client(scripted.url).query_many({"q": "rate(x[", "r": "up"}, at=0.0)
    assert len(scripted.requests) == 1


def test_the_bearer_token_is_read_for_every_batch(scripted: ScriptedPrometheus, tmp_path: Path) -> None:
    """The token file is sent as a bearer token and re-read, so a rotated token is used."""
    token = tmp_path / "token"
    token.write_text("first\n")
    client = _client(scripted.url, prometheus_token_file=token)
    client.query_many({"q": "up"}, at=0.0)
    token.write_text("second")
    client.query_many({"q": "up"}, at=0.0)
    assert [r["auth"] for r in scripted.requests] == ["Bearer first", "Bearer second"]


def test_a_missing_token_file_is_a_collect_error(scripted: ScriptedPrometheus, tmp_path: Path) -> None:
    """An unreadable token file stops the collection and names the file."""
    client = _client(scripted.url, prometheus_token_file=tmp_path / "absent")
    with pytest.raises(CollectError, match="cannot read the Prometheus token file"):
        client.query_many({"q": "up"}, at=0.0)
    assert scripted.requests == []
