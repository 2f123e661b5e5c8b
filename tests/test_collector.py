"""Tests of the collector's cluster side (against kmock), its queries, and the overlay onto a system."""

from __future__ import annotations

import time

import pytest

from inferno.collector import Collector, build_queries, observe_system
from inferno.config import Settings
from inferno.errors import CollectError, ConfigError
from inferno.spec import SystemSpec
from inferno.state import LOAD_LABELS, LOAD_PROMETHEUS, Load, Metrics, ObservedServer, Snapshot, Variant
from inferno.system import load_system
from tests.conftest import SAMPLES
from tests.support.kube import NODES, Emulator, deployment, node

LOAD_LABEL_VALUES = {
    "inferno.server.load.rpm": "120",
    "inferno.server.load.intokens": "512",
    "inferno.server.load.outtokens": "128",
}


def _collect(emulator: Emulator, **settings: object) -> Snapshot:
    return Collector(emulator.kube(), None, Settings(**settings), clock=lambda: 1700000000.0).collect()  # type: ignore[arg-type]


def test_only_managed_deployments_are_discovered(emulator: Emulator) -> None:
    """emulator: kmock. The managed label selects (the selector is sent, and checked on what comes back)."""
    emulator.add(
        deployment("chat-h100", server="chat"),
        deployment("other", managed=False),
        deployment("off", labels={"inferno.server.managed": "false"}),
    )
    snapshot = _collect(emulator, label_selector="tier=gold")
    assert [s.name for s in snapshot.servers] == ["chat"]
    assert emulator.requests()[0].params["labelSelector"] == "inferno.server.managed=true,tier=gold"
    assert snapshot.taken_at == 1700000000.0


def test_deployments_of_one_server_become_its_variants(emulator: Emulator) -> None:
    """emulator: kmock. Two Deployments of 'chat' are two variants, with replicas, versions, --max-num-seqs."""
    emulator.add(
        deployment("chat-h100", server="chat", accelerator="H100", replicas=3, ready=2, resource_version="7"),
        deployment("chat-a100", server="chat", accelerator="A100", replicas=1, args=["--max-num-seqs=32"]),
        deployment("solo", accelerator="L4", args=["--model", "m"]),
    )
    snapshot = _collect(emulator)
    chat, solo = snapshot.servers
    assert (chat.name, chat.model, chat.class_name, chat.replicas) == ("chat", "llama-8b", "Premium", 4)
    a100, h100 = chat.variants
    assert (a100.deployment, a100.accelerator, a100.replicas, a100.max_num_seqs) == ("chat-a100", "A100", 1, 32)
    assert (h100.replicas, h100.ready_replicas, h100.max_num_seqs) == (3, 2, 64)
    assert (h100.resource_version, h100.generation, h100.container) == ("7", 3, "vllm")
    assert (solo.name, solo.variants[0].max_num_seqs) == ("solo", None)


def test_inconsistent_deployments_are_problems_of_their_server(emulator: Emulator) -> None:
    """emulator: kmock. Two Deployments per accelerator, no accelerator label, disagreeing models: reported."""
    emulator.add(
        deployment("x-1", server="x", accelerator="H100", labels=LOAD_LABEL_VALUES),
        deployment("x-2", server="x", accelerator="H100", model="other"),
        deployment("x-3", server="x", accelerator=None),
    )
    (x,) = _collect(emulator).servers
    assert x.problems == (
        "llm/x-3: no inferno.server.allocation.accelerator label",
        "its Deployments disagree on inferno.server.model: llama-8b, other",
        "2 Deployments for accelerator 'H100'",
    )
    assert not x.complete


def test_an_ambiguous_container_is_a_problem(emulator: Emulator) -> None:
    """emulator: kmock. Two vLLM-looking containers without INFERNO_VLLM_CONTAINER: reported, not guessed."""
    containers = [{"name": "a", "image": "vllm/vllm-openai"}, {"name": "b", "image": "vllm/vllm-openai"}]
    emulator.add(deployment("d", containers=containers, labels=LOAD_LABEL_VALUES))
    (d,) = _collect(emulator).servers
    assert d.problems == (
        "llm/d: cannot tell which container runs vLLM (containers: a, b); set INFERNO_VLLM_CONTAINER",
    )
    (d,) = _collect(emulator, vllm_container="b").servers
    assert d.problems == () and d.variants[0].container == "b"


def test_without_prometheus_the_load_labels_are_the_load(emulator: Emulator) -> None:
    """emulator: kmock. No Prometheus: labelled servers get the label load, others a problem (never a zero)."""
    emulator.add(deployment("a", labels=LOAD_LABEL_VALUES), deployment("b"))
    a, b = _collect(emulator).servers
    assert a.load == Load(120.0, 512.0, 128.0, LOAD_LABELS)
    assert a.complete and a.notes == (
        "load from the inferno.server.load.* labels, because no metrics: INFERNO_PROMETHEUS_URL is not set",
    )
    assert b.load is None and not b.complete
    assert b.problems == ("no metrics: INFERNO_PROMETHEUS_URL is not set",)
    assert b.metrics == Metrics()


def test_a_bad_load_label_is_a_problem(emulator: Emulator) -> None:
    """emulator: kmock. rpm='lots' cannot stand in for metrics."""
    emulator.add(deployment("a", labels={"inferno.server.load.rpm": "lots"}))
    (a,) = _collect(emulator).servers
    assert a.load is None
    assert a.problems[0] == "llm/a: label inferno.server.load.rpm='lots' is not a non-negative number"


def test_namespaces_limit_discovery(emulator: Emulator) -> None:
    """emulator: kmock. INFERNO_NAMESPACES lists each namespace instead of the whole cluster."""
    emulator.add(deployment("a", namespace="n1"), deployment("b", namespace="n2"))
    snapshot = _collect(emulator, namespaces=("n2",))
    assert [s.name for s in snapshot.servers] == ["b"]
    assert [r.url.path for r in emulator.requests()] == ["/apis/apps/v1/namespaces/n2/deployments"]


def test_the_gpu_inventory_is_collected_on_request(emulator: Emulator) -> None:
    """emulator: kmock. With INFERNO_GPU_INVENTORY the snapshot holds cards per product; without, None."""
    emulator.add(node("n1", "NVIDIA-L4", 4), node("n2", "NVIDIA-L4", 4), resource=NODES)
    assert _collect(emulator).gpus is None
    assert _collect(emulator, gpu_inventory=True).gpus == {"NVIDIA-L4": 8}


def test_an_api_failure_fails_the_collection(emulator: Emulator) -> None:
    """emulator: kmock. A 500 on the list is a transient CollectError: the cycle is skipped."""
    emulator.fail("get", "/apis/apps/v1/deployments", 500, "etcd is down")
    with pytest.raises(CollectError, match="list Deployments: HTTP 500: etcd is down") as info:
        _collect(emulator)
    assert info.value.transient


def test_queries_follow_the_templates_and_metric_names() -> None:
    """Per-pod PromQL: sums by namespace and pod over the window; pre-V1 names joined with 'or'."""
    queries = build_queries(Settings(metrics_window="2m", namespaces=("a", "b")))
    sel = '{namespace=~"a|b"}'
    assert queries["requests"] == f"sum by (namespace, pod) (rate(vllm:request_success_total{sel}[2m]))"
    assert queries["ttft_count"] == f"sum by (namespace, pod) (rate(vllm:time_to_first_token_seconds_count{sel}[2m]))"
    assert queries["growth"] == f"sum by (namespace, pod) (deriv(vllm:num_requests_waiting{sel}[2m]))"
    assert queries["kv_cache"] == (
        f"(avg by (namespace, pod) (avg_over_time(vllm:kv_cache_usage_perc{sel}[2m])))"
        f" or (avg by (namespace, pod) (avg_over_time(vllm:gpu_cache_usage_perc{sel}[2m])))"
    )
    assert len(queries) == 13


def test_custom_labels_and_metric_names_are_used() -> None:
    """Other pod/namespace labels and metric names go into every query."""
    queries = build_queries(
        Settings(pod_label="kubernetes_pod_name", namespace_label="ns", metric_requests=("my:done_total",))
    )
    assert queries["requests"] == "sum by (ns, kubernetes_pod_name) (rate(my:done_total[1m]))"


def test_a_bad_query_template_is_a_config_error() -> None:
    """A template with an unknown placeholder fails when the collector is built."""
    with pytest.raises(ConfigError, match=r"settings: INFERNO_QUERY_RATE: 'rate\(\$metrics\[\$window\]\)' is invalid"):
        build_queries(Settings(query_rate="rate($metrics[$window])"))


# --- observe_system: the optimizer's input ----------------------------------------------------


@pytest.fixture(scope="module")
def system() -> SystemSpec:
    """The bundled small sample system."""
    return load_system(SAMPLES / "small.yaml").spec


def _variant(server: str, accelerator: str, replicas: int, seqs: int | None = 64) -> Variant:
    return Variant("llm", f"{server}-{accelerator.lower()}", server, accelerator, replicas, replicas, replicas,
                   replicas, seqs, "vllm", "1", 1)  # fmt: skip


def _observed(
    name: str, *variants: Variant, load: Load | None, problems: tuple[str, ...] = (), **kw: str
) -> ObservedServer:
    metrics = Metrics(ttft_ms=180.0, itl_ms=21.0) if load else Metrics()
    model, klass = kw.get("model", "llama-3.1-8b"), kw.get("klass", "Premium")
    return ObservedServer(name, model, klass, variants, metrics, load, problems)


def _snapshot(*servers: ObservedServer, gpus: dict[str, int] | None = None) -> Snapshot:
    return Snapshot(taken_at=0.0, window="1m", servers=servers, gpus=gpus)


def test_observed_load_and_allocation_are_laid_over_the_system(system: SystemSpec) -> None:
    """currentAlloc takes the main variant, the load (req/min) and the latencies; the rest stays as configured."""
    chat = _observed(
        "chat-premium",
        _variant("chat-premium", "H100", 3, 128),
        _variant("chat-premium", "A100", 1),
        load=Load(900.0, 700.0, 200.0, LOAD_PROMETHEUS),
    )
    observed = observe_system(system, _snapshot(chat))
    server = next(s for s in observed.spec.server_data.servers if s.name == "chat-premium")
    alloc = server.current_alloc
    assert (alloc.accelerator, alloc.num_replicas, alloc.max_batch) == ("H100", 3, 128)
    assert (alloc.load.arrival_rate, alloc.load.avg_in_tokens, alloc.load.avg_out_tokens) == (900.0, 700.0, 200.0)
    assert (alloc.ttft_average, alloc.itl_average) == (180.0, 21.0)
    assert (server.min_num_replicas, server.class_name) == (1, "Premium")
    assert "chat-premium" not in observed.flagged


def test_servers_with_problems_are_flagged_and_left_as_configured(system: SystemSpec) -> None:
    """A server with missing data keeps its configured entry (no zeros) and is flagged with the reasons."""
    broken = _observed("chat-free", _variant("chat-free", "H100", 2), load=None, problems=("ITL missing",))
    observed = observe_system(system, _snapshot(broken))
    before = next(s for s in system.server_data.servers if s.name == "chat-free")
    after = next(s for s in observed.spec.server_data.servers if s.name == "chat-free")
    assert after == before
    assert observed.flagged["chat-free"] == ("ITL missing",)
    assert observed.flagged["assistant-premium"] == ("no managed Deployment found",)


def test_an_idle_server_keeps_its_configured_token_counts(system: SystemSpec) -> None:
    """Zero load with unknown token means: arrivalRate 0, configured avgIn/OutTokens kept."""
    idle = _observed("chat-free", _variant("chat-free", "L4", 1), load=Load(0.0, None, None, LOAD_PROMETHEUS))
    server = next(s for s in observe_system(system, _snapshot(idle)).spec.server_data.servers if s.name == "chat-free")
    assert server.current_alloc.load.arrival_rate == 0.0
    assert (server.current_alloc.load.avg_in_tokens, server.current_alloc.load.avg_out_tokens) == (256.0, 256.0)


def test_a_server_found_only_in_the_cluster_is_added_from_its_labels(system: SystemSpec) -> None:
    """Known model and class: added with a note; unknown model: flagged, not added."""
    new = _observed("summarize", _variant("summarize", "L4", 2), load=Load(60.0, 900.0, 90.0, LOAD_PROMETHEUS))
    odd = _observed("odd", _variant("odd", "L4", 1), load=Load(6.0, 9.0, 9.0, LOAD_PROMETHEUS), model="gpt-9")
    observed = observe_system(system, _snapshot(new, odd))
    names = [s.name for s in observed.spec.server_data.servers]
    assert "summarize" in names and "odd" not in names
    added = next(s for s in observed.spec.server_data.servers if s.name == "summarize")
    assert (added.model, added.class_name, added.current_alloc.num_replicas) == ("llama-3.1-8b", "Premium", 2)
    assert observed.notes["summarize"] == ("not in the system; added from its labels",)
    assert "no known model and class (model 'gpt-9', class 'Premium')" in observed.flagged["odd"][0]


def test_the_node_inventory_becomes_capacity_with_configured_overrides(system: SystemSpec) -> None:
    """Products map to card types by name or by INFERNO_GPU_PRODUCTS; configured counts win per type."""
    gpus = {"NVIDIA-H100-80GB-HBM3": 24, "NVIDIA-L4": 8, "Tesla-T4": 4, "RTX-6000-Ada": 2}
    spec = system.model_copy(update={"capacity_data": system.capacity_data.model_copy(update={"count": ()})})
    observed = observe_system(spec, _snapshot(gpus=gpus), gpu_products={"RTX-6000-Ada": "A100"})
    assert {c.type: c.count for c in observed.spec.capacity_data.count} == {"A100": 2, "H100": 24, "L4": 8}
    assert observed.warnings == ("GPU product 'Tesla-T4' matches no accelerator type; map it in INFERNO_GPU_PRODUCTS",)
    overridden = observe_system(system, _snapshot(gpus=gpus))
    assert {c.type: c.count for c in overridden.spec.capacity_data.count} == {"A100": 16, "H100": 16, "L4": 32}


def test_without_an_inventory_the_configured_capacity_stays(system: SystemSpec) -> None:
    """gpus None: the capacity is the configured one, unchanged."""
    assert observe_system(system, _snapshot()).spec.capacity_data == system.capacity_data


def test_collection_uses_the_injected_clock(emulator: Emulator) -> None:
    """emulator: kmock. taken_at is the clock's time, not the wall clock."""
    emulator.add(deployment("a", labels=LOAD_LABEL_VALUES))
    snapshot = Collector(emulator.kube(), None, Settings(), clock=lambda: 42.0).collect()
    assert snapshot.taken_at == 42.0 != time.time()
