"""The load generator and the calibration plan against a scripted OpenAI-compatible server (no vLLM)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inferno.calibration import Plan, ScrapeReader, poisson_requests
from inferno.errors import ConfigError
from inferno.loadgen import Request, RequestResult, run_load, scrape_metrics, summarize

FIRST_S = 0.05
"""The scripted server's time to first token."""
GAP_S = 0.01
"""Its time between tokens."""
METRICS = """# TYPE vllm:request_success_total counter
vllm:request_success_total{finished_reason="stop"} 3.0
vllm:request_success_total{finished_reason="length"} 5.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="+Inf"} 8.0
vllm:time_to_first_token_seconds_sum 0.4
vllm:time_to_first_token_seconds_count 8.0
"""


class Scripted(BaseHTTPRequestHandler):
    """Streams ``max_tokens`` tokens (first after FIRST_S, then every GAP_S); a BOS token on every prompt."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """/metrics."""
        body = METRICS.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """/tokenize and streaming /v1/completions."""
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt_tokens = len(request["prompt"].split()) + 1
        if self.path == "/tokenize":
            body = json.dumps({"count": prompt_tokens}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        tokens = request["max_tokens"]
        time.sleep(FIRST_S)
        self._event({"choices": [{"text": " a"}]})
        time.sleep(GAP_S * (tokens - 1))
        self._event({"choices": [{"text": " b" * (tokens - 1)}]})
        self._event({"choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens}})
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _event(self, data: object) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def scripted() -> Iterator[str]:
    """The scripted server's base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_open_loop_timings_and_token_counts(scripted: str) -> None:
    """Sends keep their schedule though each response takes longer; TTFT, ITL and counts are measured."""
    requests = [Request(0.1 * i, 40, 11) for i in range(5)]
    results = run_load(scripted, "m", requests, timeout_s=5)
    assert all(r.ok for r in results), [r.error for r in results]
    offsets = [r.sent_at - results[0].sent_at for r in results]
    assert offsets == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=0.03)
    for r in results:
        assert r.prompt_tokens == 40  # 39 words + the BOS token the tokenize probe revealed
        assert r.generated_tokens == 11
        assert r.ttft_s == pytest.approx(FIRST_S, abs=0.03)
        assert r.itl_s == pytest.approx(GAP_S, abs=0.004)
        assert r.e2e_s is not None and r.e2e_s >= FIRST_S + 10 * GAP_S


def test_dropped_at_max_in_flight(scripted: str) -> None:
    """A request that would exceed max_in_flight is not sent and is recorded as dropped."""
    results = run_load(scripted, "m", [Request(0.0, 4, 20), Request(0.01, 4, 20)], max_in_flight=1)
    assert results[0].ok
    assert results[1].error is not None and results[1].error.startswith("dropped")
    assert summarize(results).errors == 1


def test_summary_means_window_and_token_weighted_itl() -> None:
    """Means, the token-weighted ITL and the windowed rate follow from the results."""
    results = [
        RequestResult(Request(0, 10, 3), 100.0, 0.010, 0.002, 0.014, 10, 3),
        RequestResult(Request(1, 30, 5), 101.0, 0.030, 0.004, 0.046, 30, 5),
        RequestResult(Request(2, 10, 3), 102.0, None, None, None, 0, 0, "HTTP 500: boom"),
    ]
    whole = summarize(results)
    assert (whole.requests, whole.ok, whole.errors) == (3, 2, 1)
    assert whole.rate_rps == pytest.approx(1.0)
    assert whole.in_tokens == pytest.approx(20.0) and whole.out_tokens == pytest.approx(4.0)
    assert whole.ttft_ms == pytest.approx(20.0)
    assert whole.itl_ms == pytest.approx((2 * 2 + 4 * 4) / 6)
    windowed = summarize(results, 100.5, 102.5)
    assert windowed.requests == 1 and windowed.rate_rps == pytest.approx(0.5)
    assert windowed.ttft_ms == pytest.approx(30.0)


def test_scrape_sums_labels_and_reader_differences(scripted: str) -> None:
    """scrape_metrics sums a counter over its labels; the scrape reader refuses a window with nothing counted."""
    totals = scrape_metrics(scripted)
    assert totals["vllm:request_success_total"] == 8.0
    assert totals["vllm:time_to_first_token_seconds_sum"] == pytest.approx(0.4)
    assert "vllm:time_to_first_token_seconds_bucket" not in totals
    reader = ScrapeReader(scripted)
    reader.mark(time.time())
    with pytest.raises(Exception, match="nothing was counted"):
        reader.measure(0.0, 1.0)


def test_poisson_requests_and_plan_checks() -> None:
    """Poisson arrivals are seeded and near the rate; a plan with impossible values is a ConfigError."""
    first = poisson_requests(20.0, 30.0, (16, 8), seed=3)
    assert first == poisson_requests(20.0, 30.0, (16, 8), seed=3)
    assert 480 <= len(first) <= 720
    assert all(0 < r.at_s < 30 and (r.in_tokens, r.out_tokens) == (16, 8) for r in first)
    with pytest.raises(ConfigError, match="fractions"):
        Plan(loads=(0.5, 1.2))
    with pytest.raises(ConfigError, match="output tokens"):
        Plan(mixes=((16, 1),))
