"""The collector against a real Prometheus scraping fake vLLM pods, with Deployments in the kmock emulator."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import pytest

from inferno.collector import Collector
from inferno.config import Settings
from inferno.prometheus import connect
from inferno.state import LOAD_LABELS, LOAD_PROMETHEUS, ObservedServer, Snapshot, Variant
from tests.support.kube import Emulator, deployment
from tests.support.prometheus import PrometheusServer
from tests.support.vllm_exporter import FakePod

pytestmark = pytest.mark.prometheus

NS = "prom"
WINDOW_S = 5
ITL_V1 = "vllm:inter_token_latency_seconds"

POD_A = FakePod(
    NS, "chat-h100-5d8f9c7b6-aaaaa", 4.0, 500, 200, 0.25, 0.020, running=6, waiting=1, growth=0.5, kv_cache=0.4
)
POD_B = FakePod(NS, "chat-h100-5d8f9c7b6-bbbbb", 2.0, 300, 100, 0.15, 0.030, running=3, kv_cache=0.2)
POD_C = FakePod(NS, "chat-a100-7c6b5a493-ccccc", 1.0, 400, 150, 0.50, 0.040, running=2, kv_cache=0.6)
LEGACY = FakePod(NS, "legacy-l40s-6f5e4d3c2-ddddd", 1.5, 256, 64, 0.3, 0.025, kv_cache=0.5, legacy=True)
GAPS = FakePod(NS, "gaps-h100-6d5c4b3a2-eeeee", 1.0, omit=frozenset({ITL_V1}))
GAPS_LABELS = FakePod(NS, "gapslbl-h100-6d5c4b3a2-fffff", 1.0, omit=frozenset({ITL_V1}))
NAN = FakePod(NS, "nan-h100-6d5c4b3a2-ggggg", 1.0, nan=frozenset({"vllm:kv_cache_usage_perc"}))
PARTIAL = FakePod(NS, "partial-h100-6d5c4b3a2-hhhhh", 1.0)
STALE = FakePod(NS, "stale-h100-6d5c4b3a2-iiiii", 1.0)
IDLE = FakePod(NS, "idle-h100-6d5c4b3a2-jjjjj", 0.0)
PODS = (POD_A, POD_B, POD_C, LEGACY, GAPS, GAPS_LABELS, NAN, PARTIAL, STALE, IDLE)


def _deployments() -> list[dict[str, object]]:
    return [
        deployment("chat-h100", namespace=NS, server="chat", accelerator="H100", replicas=2),
        deployment("chat-a100", namespace=NS, server="chat", accelerator="A100", replicas=1),
        deployment("legacy-l40s", namespace=NS, server="legacy", accelerator="L40S"),
        deployment("gaps-h100", namespace=NS, server="gaps"),
        deployment(
            "gapslbl-h100",
            namespace=NS,
            server="gapslbl",
            labels={
                "inferno.server.load.rpm": "90",
                "inferno.server.load.intokens": "256",
                "inferno.server.load.outtokens": "64",
            },
        ),
        deployment("nan-h100", namespace=NS, server="nan"),
        deployment("partial-h100", namespace=NS, server="partial", replicas=2),
        deployment("stale-h100", namespace=NS, server="stale"),
        deployment("idle-h100", namespace=NS, server="idle"),
    ]


@pytest.fixture(scope="module")
def snapshot(prometheus: PrometheusServer) -> Iterator[Snapshot]:
    """One collection after the fake pods have filled the metrics window."""
    prometheus.fleet.add(*PODS)
    emulator = Emulator()
    emulator.add(*_deployments())
    prometheus.settle(NS, series=2 * len(PODS), window_s=0)
    prometheus.fleet.remove(NS, STALE.pod)
    time.sleep(WINDOW_S + 1.5)
    settings = Settings(prometheus_url=prometheus.url, metrics_window=f"{WINDOW_S}s", namespaces=(NS,))
    yield Collector(emulator.kube(), connect(settings), settings, clock=time.time).collect()
    emulator.close()
    for pod in PODS:
        if pod is not STALE:
            prometheus.fleet.remove(NS, pod.pod)


def _server(snapshot: Snapshot, name: str) -> ObservedServer:
    server = snapshot.server(name)
    assert server is not None, f"server {name} not collected"
    return server


def _variant(server: ObservedServer, accelerator: str) -> Variant:
    return next(v for v in server.variants if v.accelerator == accelerator)


def _weighted(pods: Sequence[FakePod], value: str, weight: str = "rps") -> float:
    """The mean of a per-request (or per-token) quantity over pods, as vLLM's histograms measure it."""

    def w(p: FakePod) -> float:
        return p.rps * (p.out_tokens - 1) if weight == "tokens" else p.rps

    return sum(w(p) * getattr(p, value) for p in pods) / sum(w(p) for p in pods)


def test_variant_rates_tokens_and_latencies_match_the_exporters(snapshot: Snapshot) -> None:
    """emulator: kmock. Two pods: completions, arrival (with queue growth), token means, TTFT, ITL within 5%."""
    m = _variant(_server(snapshot, "chat"), "H100").metrics
    assert m.completion_rps == pytest.approx(6.0, rel=0.05)
    assert m.arrival_rps == pytest.approx(6.5, rel=0.05)
    assert m.in_tokens == pytest.approx(_weighted([POD_A, POD_B], "in_tokens"), rel=0.05)
    assert m.out_tokens == pytest.approx(_weighted([POD_A, POD_B], "out_tokens"), rel=0.05)
    assert m.ttft_ms == pytest.approx(1000 * _weighted([POD_A, POD_B], "ttft_s"), rel=0.05)
    assert m.itl_ms == pytest.approx(1000 * _weighted([POD_A, POD_B], "itl_s", "tokens"), rel=0.05)
    assert m.running == pytest.approx(9.0)
    assert m.kv_cache == pytest.approx(0.3)
    assert m.waiting is not None and m.waiting > 1.0


def test_server_load_sums_its_variants(snapshot: Snapshot) -> None:
    """emulator: kmock. The server's load sums its variants: 7.5 req/s = 450 req/min, token means by requests."""
    chat = _server(snapshot, "chat")
    assert chat.problems == ()
    assert chat.load is not None and chat.load.source == LOAD_PROMETHEUS
    assert chat.load.arrival_rpm == pytest.approx(450.0, rel=0.05)
    assert chat.load.in_tokens == pytest.approx(_weighted([POD_A, POD_B, POD_C], "in_tokens"), rel=0.05)
    assert chat.load.out_tokens == pytest.approx(_weighted([POD_A, POD_B, POD_C], "out_tokens"), rel=0.05)
    assert chat.metrics.ttft_ms == pytest.approx(1000 * _weighted([POD_A, POD_B, POD_C], "ttft_s"), rel=0.05)
    itl = 1000 * _weighted([POD_A, POD_B, POD_C], "itl_s", "tokens")
    assert chat.metrics.itl_ms == pytest.approx(itl, rel=0.05)
    assert _variant(chat, "A100").metrics.completion_rps == pytest.approx(1.0, rel=0.05)


def test_each_replica_is_reported_for_the_tuner(snapshot: Snapshot) -> None:
    """emulator: kmock. Per-pod metrics carry each pod's own rate, tokens and latencies."""
    pods = {p.pod: p.metrics for p in _variant(_server(snapshot, "chat"), "H100").pods}
    assert set(pods) == {POD_A.pod, POD_B.pod}
    a, b = pods[POD_A.pod], pods[POD_B.pod]
    assert a.completion_rps == pytest.approx(4.0, rel=0.05)
    assert b.completion_rps == pytest.approx(2.0, rel=0.05)
    assert (a.in_tokens, b.in_tokens) == (pytest.approx(500, rel=0.05), pytest.approx(300, rel=0.05))
    assert (a.ttft_ms, b.ttft_ms) == (pytest.approx(250, rel=0.05), pytest.approx(150, rel=0.05))
    assert (a.itl_ms, b.itl_ms) == (pytest.approx(20, rel=0.05), pytest.approx(30, rel=0.05))
    assert (a.running, b.running) == (6.0, 3.0)


def test_pre_v1_metric_names_are_the_fallback(snapshot: Snapshot) -> None:
    """emulator: kmock. Pre-V1 time_per_output_token_seconds and gpu_cache_usage_perc still give ITL and KV use."""
    legacy = _server(snapshot, "legacy")
    assert legacy.problems == ()
    assert legacy.metrics.itl_ms == pytest.approx(25.0, rel=0.05)
    assert legacy.metrics.kv_cache == pytest.approx(0.5)
    assert legacy.load is not None and legacy.load.arrival_rpm == pytest.approx(90.0, rel=0.05)


def test_a_missing_metric_is_a_problem_not_a_zero(snapshot: Snapshot) -> None:
    """emulator: kmock. Without an ITL histogram the ITL is None, the server has a problem and no load."""
    gaps = _server(snapshot, "gaps")
    assert gaps.metrics.itl_ms is None
    assert gaps.load is None and not gaps.complete
    assert gaps.problems == (f"{NS}/gaps-h100: {ITL_V1} or vllm:time_per_output_token_seconds missing for 1 of 1 pods",)
    assert gaps.metrics.completion_rps == pytest.approx(1.0, rel=0.05), "the other metrics are still read"


def test_load_labels_stand_in_for_missing_metrics(snapshot: Snapshot) -> None:
    """emulator: kmock. A server missing a metric takes its load from the load labels, noting why."""
    server = _server(snapshot, "gapslbl")
    assert server.problems == ()
    assert server.load is not None
    assert (server.load.arrival_rpm, server.load.in_tokens, server.load.out_tokens) == (90.0, 256.0, 64.0)
    assert server.load.source == LOAD_LABELS
    assert len(server.notes) == 1 and "missing for 1 of 1 pods" in server.notes[0]


def test_nan_from_prometheus_is_reported_missing(snapshot: Snapshot) -> None:
    """emulator: kmock. A NaN KV-cache gauge becomes None and a problem naming the metric."""
    nan = _server(snapshot, "nan")
    assert nan.metrics.kv_cache is None
    assert nan.metrics.completion_rps == pytest.approx(1.0, rel=0.05)
    assert nan.problems == (
        f"{NS}/nan-h100: vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc is NaN or infinite for 1 of 1 pods",
    )


def test_fewer_reporting_pods_than_ready_replicas_is_partial(snapshot: Snapshot) -> None:
    """emulator: kmock. Two ready replicas but one pod with metrics: reported, no load."""
    partial = _server(snapshot, "partial")
    assert partial.problems == (f"{NS}/partial-h100: 1 of 2 ready pods report vllm:request_success_total",)
    assert partial.load is None


def test_a_stale_pod_is_reported_missing(snapshot: Snapshot) -> None:
    """emulator: kmock. A pod that stopped exporting longer than a window ago counts as not reporting."""
    stale = _server(snapshot, "stale")
    assert stale.problems == (f"{NS}/stale-h100: 0 of 1 ready pods report vllm:request_success_total",)
    assert stale.variants[0].pods == ()


def test_an_idle_server_has_a_measured_zero_load(snapshot: Snapshot) -> None:
    """emulator: kmock. No requests in the window: a measured 0 req/min, token means unknown, and no problem."""
    idle = _server(snapshot, "idle")
    assert idle.problems == ()
    assert idle.load is not None and idle.load.arrival_rpm == 0.0
    assert (idle.load.in_tokens, idle.metrics.ttft_ms) == (None, None)


def test_the_snapshot_replays_from_json(snapshot: Snapshot) -> None:
    """emulator: kmock. to_dict/from_dict give back an equal snapshot, NaN-free."""
    data = snapshot.to_dict()
    assert Snapshot.from_dict(data) == snapshot
    assert data["window"] == f"{WINDOW_S}s"
