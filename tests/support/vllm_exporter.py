"""A fake fleet of vLLM pods: one HTTP endpoint serving vLLM V1 metrics in the Prometheus text format.

Each pod's counters grow linearly from the moment it is added, at its configured request rate, so any
rate over a window that its samples cover is known exactly. Series carry ``namespace`` and ``pod`` labels
themselves (scrape with ``honor_labels``), as Prometheus' Kubernetes discovery would add them. The
exposition text is written by :mod:`inferno.sim.exposition` (shared with the vLLM emulator), not by
prometheus_client: its newer releases rename ``vllm:x`` for Prometheus 2.x scrapers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from inferno.sim.exposition import CONTENT_TYPE, Family, Sample, family_name, render

FINISHED_SHARES = {"stop": 0.75, "length": 0.25}
"""How a pod's finished requests split over vLLM's finished_reason label."""


@dataclass(frozen=True)
class FakePod:
    """What one vLLM pod does: a steady load and its latencies."""

    namespace: str
    pod: str
    rps: float
    in_tokens: float = 512.0
    out_tokens: float = 128.0
    ttft_s: float = 0.2
    itl_s: float = 0.02
    running: float = 4.0
    waiting: float = 0.0
    growth: float = 0.0
    """Waiting requests added per second."""
    kv_cache: float = 0.3
    model: str = "llama-8b"
    legacy: bool = False
    """Serve the pre-V1 names of ITL and KV-cache use."""
    omit: frozenset[str] = field(default_factory=frozenset)
    """Metric names (without suffixes) not served."""
    nan: frozenset[str] = field(default_factory=frozenset)
    """Metric names (without suffixes) served as NaN."""

    @property
    def itl_name(self) -> str:
        """The ITL histogram this pod serves."""
        return "vllm:time_per_output_token_seconds" if self.legacy else "vllm:inter_token_latency_seconds"

    @property
    def kv_name(self) -> str:
        """The KV-cache gauge this pod serves."""
        return "vllm:gpu_cache_usage_perc" if self.legacy else "vllm:kv_cache_usage_perc"


class FakeVllmFleet:
    """Serves ``/metrics`` for every pod added; pods can be added and removed while it runs."""

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], tuple[FakePod, float]] = {}
        self._lock = threading.Lock()
        fleet = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = fleet.exposition(time.time()).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """host:port of the endpoint."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def add(self, *pods: FakePod) -> None:
        """Start serving ``pods``; their counters start at zero now."""
        now = time.time()
        with self._lock:
            for pod in pods:
                self._pods[pod.namespace, pod.pod] = (pod, now)

    def remove(self, namespace: str, pod: str) -> None:
        """Stop serving a pod (its series go stale)."""
        with self._lock:
            del self._pods[namespace, pod]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def exposition(self, now: float) -> str:
        """The text exposition of every pod at time ``now``."""
        with self._lock:
            pods = list(self._pods.values())
        families = []
        for pod, since in pods:
            for name, kind, labels, value in _series(pod, now - since):
                family = family_name(name)
                if family in pod.omit:
                    continue
                shown = math.nan if family in pod.nan else value
                sample = Sample(name, {**_labels(pod), **labels}, shown)
                families.append(Family(family, kind, "fake vLLM metric", (sample,)))
        return render(families)


def _series(pod: FakePod, age: float) -> Iterator[tuple[str, str, dict[str, str], float]]:
    """(name, type, extra labels, value) of every series of a pod ``age`` seconds after it started."""
    done = pod.rps * age
    for reason, share in FINISHED_SHARES.items():
        yield "vllm:request_success_total", "counter", {"finished_reason": reason}, done * share
    yield "vllm:prompt_tokens_total", "counter", {}, done * pod.in_tokens
    yield "vllm:generation_tokens_total", "counter", {}, done * pod.out_tokens
    histograms = {
        "vllm:request_prompt_tokens": (done, done * pod.in_tokens),
        "vllm:request_generation_tokens": (done, done * pod.out_tokens),
        "vllm:time_to_first_token_seconds": (done, done * pod.ttft_s),
        pod.itl_name: (done * (pod.out_tokens - 1), done * (pod.out_tokens - 1) * pod.itl_s),
    }
    for name, (count, total) in histograms.items():
        yield f"{name}_bucket", "histogram", {"le": "+Inf"}, count
        yield f"{name}_sum", "histogram", {}, total
        yield f"{name}_count", "histogram", {}, count
    yield "vllm:num_requests_running", "gauge", {}, pod.running
    yield "vllm:num_requests_waiting", "gauge", {}, pod.waiting + pod.growth * age
    yield pod.kv_name, "gauge", {}, pod.kv_cache


def _labels(pod: FakePod) -> dict[str, str]:
    return {"engine": "0", "model_name": pod.model, "namespace": pod.namespace, "pod": pod.pod}
