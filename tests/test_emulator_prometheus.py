"""The emulated vLLM's /metrics scraped by a real Prometheus (and by the built-in scraper), read by the Collector."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from inferno.collector import Collector
from inferno.config import Settings
from inferno.loadgen import Request, RequestResult, run_load, summarize
from inferno.prometheus import connect
from inferno.sim.cluster import Cluster, managed_deployment
from inferno.sim.exposition import parse
from inferno.sim.scraper import Scraper
from inferno.state import LOAD_PROMETHEUS, Metrics, Snapshot
from tests.support.prometheus import PrometheusServer
from tests.test_emulator import MODEL, EmulatorProcess

pytestmark = pytest.mark.prometheus

NS = "emu"
POD = "chat-h100-6b7c8d9e0f-abcde"
WINDOW_S = 15
RATE_RPS = 10.0
"""Wall-clock requests per second, evenly spaced: counts in a window are exact to one request."""


def _served(url: str) -> dict[str, float]:
    """The emulator's own series now, summed over labels (it has a single pod)."""
    totals: dict[str, float] = {}
    for sample in parse(httpx.get(url + "/metrics").text):
        if not sample.name.endswith("_bucket"):
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


@dataclass(frozen=True)
class Run:
    """Snapshots through Prometheus and through the scraper at one time, what the emulator served in the window."""

    prometheus: Snapshot
    scraped: Snapshot
    served: Metrics
    client_rps: float


@pytest.fixture(scope="module")
def run(prometheus: PrometheusServer) -> Run:
    """Steady load on an emulator for a window, collected at its end."""
    emulator = EmulatorProcess(
        "--model", MODEL, "--alpha", "8", "--beta", "0.02", "--gamma", "0.0005", "--max-num-seqs", "32",
        "--time-scale", "2",
    )  # fmt: skip
    labels = {"namespace": NS, "pod": POD}
    scraper = Scraper(lambda: {emulator.url: labels})
    try:
        emulator.wait_healthy()
        prometheus.add_target(f"127.0.0.1:{emulator.port}", labels)
        scraper.start()
        cluster = Cluster()
        cluster.add(
            managed_deployment(
                "chat-h100", namespace=NS, server="chat", model=MODEL, accelerator="H100",
                service_class="Premium", replicas=1, max_num_seqs=32, ready=1,
            )
        )  # fmt: skip
        plan = [
            Request(i / RATE_RPS, 100 if i % 2 else 300, 20 if i % 2 else 60)
            for i in range(int(RATE_RPS * (WINDOW_S + 10)))
        ]
        results: list[RequestResult] = []
        load = threading.Thread(target=lambda: results.extend(run_load(emulator.url, MODEL, plan, stream_interval=8)))
        load.start()
        selector = f'vllm:request_success_total{{pod="{POD}"}}'
        prometheus.wait(lambda: len(prometheus.query(selector)) > 0, 30, "the emulator was not scraped")
        time.sleep(2.0)
        before, since = _served(emulator.url), time.time()
        time.sleep(WINDOW_S)
        after, until = _served(emulator.url), time.time()
        settings = Settings(prometheus_url=prometheus.url, metrics_window=f"{WINDOW_S}s", namespaces=(NS,))
        through_prometheus = Collector(cluster, connect(settings), settings, clock=lambda: until).collect()
        scraped = Collector(cluster, scraper, settings, clock=lambda: until).collect()
        load.join(60)
    finally:
        scraper.stop()
        prometheus.remove_target(f"127.0.0.1:{emulator.port}")
        emulator.close()

    def delta(name: str) -> float:
        return after[name] - before[name]

    def mean(histogram: str, scale: float = 1.0) -> float:
        return scale * delta(histogram + "_sum") / delta(histogram + "_count")

    served = Metrics(
        completion_rps=delta("vllm:request_success_total") / (until - since),
        in_tokens=mean("vllm:request_prompt_tokens"),
        out_tokens=mean("vllm:request_generation_tokens"),
        ttft_ms=mean("vllm:time_to_first_token_seconds", 1000),
        itl_ms=mean("vllm:inter_token_latency_seconds", 1000),
    )
    window = summarize(results, since=since, until=until)
    return Run(through_prometheus, scraped, served, window.rate_rps)


def _check(snapshot: Snapshot, served: Metrics) -> None:
    chat = snapshot.server("chat")
    assert chat is not None and chat.problems == (), chat
    assert chat.load is not None and chat.load.source == LOAD_PROMETHEUS
    m = chat.metrics
    pairs = {
        k: (getattr(m, k), getattr(served, k))
        for k in ("completion_rps", "in_tokens", "out_tokens", "ttft_ms", "itl_ms")
    }
    print("collected vs served:", ", ".join(f"{k} {a / b - 1:+.2%}" for k, (a, b) in pairs.items() if a and b))
    assert m.completion_rps == pytest.approx(served.completion_rps, rel=0.05)
    assert chat.load.arrival_rpm == pytest.approx(60 * RATE_RPS, rel=0.05)
    assert m.in_tokens == pytest.approx(served.in_tokens, rel=0.05)
    assert m.out_tokens == pytest.approx(served.out_tokens, rel=0.05)
    assert m.ttft_ms == pytest.approx(served.ttft_ms, rel=0.05)
    assert m.itl_ms == pytest.approx(served.itl_ms, rel=0.05)
    (pod,) = chat.variants[0].pods
    assert (pod.namespace, pod.pod, chat.variants[0].max_num_seqs) == (NS, POD, 32)
    assert m.running is not None and 0 < m.running < 32 and m.waiting is not None and m.waiting < 1, "no queue"
    assert m.kv_cache is not None and 0 < m.kv_cache < 1


def test_collector_reads_the_emulator_through_prometheus(run: Run) -> None:
    """Rate, token means, TTFT and ITL via Prometheus are within 5% of what the emulator served in the window."""
    assert run.served.completion_rps == pytest.approx(RATE_RPS, rel=0.05)
    assert run.client_rps == pytest.approx(RATE_RPS, rel=0.05)
    assert run.served.in_tokens == pytest.approx(200, rel=0.02) and run.served.out_tokens == pytest.approx(40, rel=0.02)
    _check(run.prometheus, run.served)


def test_the_built_in_scraper_gives_the_same_view(run: Run) -> None:
    """Without Prometheus, the scraper answering the collector's queries gives the same numbers (within 5%)."""
    _check(run.scraped, run.served)
    a, b = run.scraped.server("chat"), run.prometheus.server("chat")
    assert a is not None and b is not None
    assert a.metrics.ttft_ms == pytest.approx(b.metrics.ttft_ms, rel=0.05)
