"""The collector stage: what the managed vLLM servers look like now.

:class:`Collector` lists the managed Deployments (label ``inferno.server.managed=true``), groups them into
servers (label ``inferno.server.name``) with one variant per accelerator (label
``inferno.server.allocation.accelerator``), reads their replicas and vLLM ``--max-num-seqs``, and asks
Prometheus for each pod's request rate, token counts, latencies, queue and KV-cache use over the metrics
window. Pods belong to the Deployment whose name their own name extends (``<deployment>-<hash>-<id>``).

Nothing missing becomes a zero: a metric that is absent, NaN or reported by fewer pods than are ready is
a *problem* of its server, and a server with problems must not be acted upon. The
``inferno.server.load.*`` labels are the documented fallback load when metrics are missing.

:func:`observe_system` lays a :class:`~inferno.state.Snapshot` over a configured system: the optimizer's
input.
"""

from __future__ import annotations

import math
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from inferno.config import Settings
from inferno.errors import CollectError, ConfigError, Problem
from inferno.k8s import (
    ACCELERATOR_LABEL,
    CLASS_LABEL,
    LOAD_IN_LABEL,
    LOAD_OUT_LABEL,
    LOAD_RPM_LABEL,
    MANAGED_LABEL,
    MODEL_LABEL,
    SERVER_LABEL,
    Deployment,
    DeploymentApi,
    KubeError,
    current_max_num_seqs,
    find_vllm_container,
)
from inferno.prometheus import MetricsApi
from inferno.spec import (
    DEFAULT_CLASS,
    AcceleratorCount,
    AllocationData,
    CapacityData,
    LoadSpec,
    ServerSpec,
    SystemSpec,
)
from inferno.state import (
    LOAD_LABELS,
    LOAD_PROMETHEUS,
    Load,
    Metrics,
    ObservedServer,
    ObservedSystem,
    PodMetrics,
    Snapshot,
    Variant,
)

__all__ = ["Collector", "build_queries", "observe_system"]

PLACEHOLDERS = "$metric, $selector, $window, $by, $agg"
"""What a query template may use."""

PodKey = tuple[str, str]
"""(namespace, pod)."""
Series = dict[str, dict[PodKey, float]]
"""Query name -> pod -> value."""


@dataclass(frozen=True)
class _Query:
    name: str
    template: str
    metrics: tuple[str, ...]
    suffix: str = ""
    agg: str = "sum"


def _query_specs(s: Settings) -> tuple[_Query, ...]:
    return (
        _Query("requests", s.query_rate, s.metric_requests),
        _Query("in_sum", s.query_rate, s.metric_prompt_tokens, "_sum"),
        _Query("in_count", s.query_rate, s.metric_prompt_tokens, "_count"),
        _Query("out_sum", s.query_rate, s.metric_generation_tokens, "_sum"),
        _Query("out_count", s.query_rate, s.metric_generation_tokens, "_count"),
        _Query("ttft_sum", s.query_rate, s.metric_ttft, "_sum"),
        _Query("ttft_count", s.query_rate, s.metric_ttft, "_count"),
        _Query("itl_sum", s.query_rate, s.metric_itl, "_sum"),
        _Query("itl_count", s.query_rate, s.metric_itl, "_count"),
        _Query("running", s.query_gauge, s.metric_running),
        _Query("waiting", s.query_gauge, s.metric_waiting),
        _Query("growth", s.query_growth, s.metric_waiting),
        _Query("kv_cache", s.query_gauge, s.metric_kv_cache, agg="avg"),
    )


def build_queries(settings: Settings) -> dict[str, str]:
    """The PromQL of every per-pod quantity; the metric names of one quantity are tried in order (``or``).

    ConfigError when a template uses an unknown placeholder.
    """
    by = f"{settings.namespace_label}, {settings.pod_label}"
    selector = f'{{{settings.namespace_label}=~"{"|".join(settings.namespaces)}"}}' if settings.namespaces else ""
    values = {"selector": selector, "window": settings.metrics_window, "by": by}
    templates = {
        "query_rate": settings.query_rate,
        "query_gauge": settings.query_gauge,
        "query_growth": settings.query_growth,
    }
    for field, template in templates.items():
        try:
            string.Template(template).substitute(values, metric="m", agg="sum")
        except (KeyError, ValueError) as exc:
            message = f"{template!r} is invalid ({exc!r}); use {PLACEHOLDERS}"
            raise ConfigError([Problem("settings", f"INFERNO_{field.upper()}", message)]) from exc
    queries = {}
    for q in _query_specs(settings):
        parts = [
            string.Template(q.template).substitute(values, metric=name + q.suffix, agg=q.agg) for name in q.metrics
        ]
        queries[q.name] = parts[0] if len(parts) == 1 else " or ".join(f"({p})" for p in parts)
    return queries


def _metric_names(settings: Settings) -> dict[str, str]:
    """Query name -> the metric names a problem report shows."""
    return {q.name: " or ".join(q.metrics) for q in _query_specs(settings)}


class Collector:
    """Reads the managed servers from the cluster and their metrics from Prometheus."""

    def __init__(
        self,
        kube: DeploymentApi,
        prometheus: MetricsApi | None,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._prometheus = prometheus
        self._settings = settings
        self._clock = clock
        self._queries = build_queries(settings)
        self._names = _metric_names(settings)

    def collect(self) -> Snapshot:
        """One snapshot of every managed server.

        CollectError when the API server or Prometheus cannot be read: the cycle is skipped. Problems with
        single servers do not raise; they are reported on the server.
        """
        at = self._clock()
        settings = self._settings
        selector = f"{MANAGED_LABEL}=true" + (f",{settings.label_selector}" if settings.label_selector else "")
        try:
            found = self._kube.list_deployments(settings.namespaces, selector)
            gpus = self._kube.gpu_inventory() if settings.gpu_inventory else None
        except KubeError as exc:
            raise CollectError(str(exc)) from exc
        deployments = [d for d in found if d.labels.get(MANAGED_LABEL) == "true"]
        series = self._series(self._prometheus, at) if self._prometheus is not None else None
        pods = _pods_by_deployment(series["requests"]) if series is not None else {}
        groups: dict[str, list[Deployment]] = {}
        for d in sorted(deployments, key=lambda d: (d.namespace, d.name)):
            groups.setdefault(d.labels.get(SERVER_LABEL) or d.name, []).append(d)
        servers = tuple(self._server(name, group, series, pods) for name, group in sorted(groups.items()))
        return Snapshot(taken_at=at, window=settings.metrics_window, servers=servers, gpus=gpus)

    def _series(self, prometheus: MetricsApi, at: float) -> Series:
        """Every per-pod quantity at time ``at``, keyed by (namespace, pod)."""
        ns_label, pod_label = self._settings.namespace_label, self._settings.pod_label
        return {
            name: {(s.labels.get(ns_label, ""), s.labels[pod_label]): s.value for s in samples if pod_label in s.labels}
            for name, samples in prometheus.query_many(self._queries, at).items()
        }

    def _server(
        self,
        name: str,
        deployments: Sequence[Deployment],
        series: Series | None,
        pods: Mapping[PodKey, list[PodKey]],
    ) -> ObservedServer:
        problems: list[str] = []
        metric_problems: list[str] = []
        variants = []
        for d in deployments:
            variant, of_metrics = self._variant(d, series, pods.get((d.namespace, d.name), []))
            variants.append(variant)
            problems += [f"{d.namespace}/{d.name}: {p}" for p in variant.problems if p not in of_metrics]
            metric_problems += [f"{d.namespace}/{d.name}: {p}" for p in of_metrics]
        problems += _label_conflicts(deployments)
        accelerators = [v.accelerator for v in variants if v.accelerator]
        problems += [
            f"{accelerators.count(a)} Deployments for accelerator {a!r}"
            for a in sorted(set(accelerators))
            if accelerators.count(a) > 1
        ]
        if series is None:
            metrics = Metrics()
            metric_problems.append("no metrics: INFERNO_PROMETHEUS_URL is not set")
        else:
            server_pods = [key for d in deployments for key in pods.get((d.namespace, d.name), [])]
            metrics = _summarise(series, server_pods, self._names)[0]
            if not server_pods and not metric_problems:
                metric_problems.append("no pod reports metrics, so the offered load is unknown")
        load = None
        if not metric_problems:
            load, metric_problems = _measured_load(metrics)
        notes: list[str] = []
        if metric_problems:
            load, label_problems = _label_load(deployments)
            problems += label_problems
            if load is not None:
                notes += [f"load from the inferno.server.load.* labels, because {p}" for p in metric_problems]
            else:
                problems += metric_problems
        first = deployments[0].labels
        return ObservedServer(
            name=name,
            model=first.get(MODEL_LABEL, ""),
            class_name=first.get(CLASS_LABEL) or DEFAULT_CLASS,
            variants=tuple(variants),
            metrics=metrics,
            load=load,
            problems=tuple(problems),
            notes=tuple(notes),
        )

    def _variant(self, d: Deployment, series: Series | None, pods: Sequence[PodKey]) -> tuple[Variant, list[str]]:
        """The variant, and those of its problems that concern metrics (the load labels can stand in for them)."""
        problems = []
        accelerator = d.labels.get(ACCELERATOR_LABEL, "")
        if not accelerator:
            problems.append(f"no {ACCELERATOR_LABEL} label")
        container, max_num_seqs = "", None
        try:
            vllm = find_vllm_container(d, self._settings.vllm_container)
            container = vllm.name
            max_num_seqs = current_max_num_seqs(d, vllm)
        except ValueError as exc:
            problems.append(str(exc))
        metrics, metric_problems = Metrics(), list[str]()
        pod_metrics: tuple[PodMetrics, ...] = ()
        if series is not None:
            metrics, metric_problems = _summarise(series, pods, self._names)
            if len(pods) < d.ready_replicas:
                metric_problems.insert(
                    0, f"{len(pods)} of {d.ready_replicas} ready pods report {self._names['requests']}"
                )
            pod_metrics = tuple(
                PodMetrics(ns, pod, _summarise(series, [(ns, pod)], self._names)[0]) for ns, pod in pods
            )
        variant = Variant(
            namespace=d.namespace,
            deployment=d.name,
            server=d.labels.get(SERVER_LABEL) or d.name,
            accelerator=accelerator,
            replicas=d.replicas,
            ready_replicas=d.ready_replicas,
            updated_replicas=d.updated_replicas,
            available_replicas=d.available_replicas,
            max_num_seqs=max_num_seqs,
            container=container,
            resource_version=d.resource_version,
            generation=d.generation,
            metrics=metrics,
            pods=pod_metrics,
            problems=(*problems, *metric_problems),
        )
        return variant, metric_problems


def _pods_by_deployment(pods: Iterable[PodKey]) -> dict[PodKey, list[PodKey]]:
    """(namespace, Deployment) -> its pods, by name: a Deployment's pod is ``<deployment>-<hash>-<id>``."""
    owned: dict[PodKey, list[PodKey]] = {}
    for ns, pod in sorted(pods):
        parts = pod.rsplit("-", 2)
        if len(parts) == 3 and parts[1].isalnum() and parts[2].isalnum():
            owned.setdefault((ns, parts[0]), []).append((ns, pod))
    return owned


def _summarise(series: Series, pods: Sequence[PodKey], names: Mapping[str, str]) -> tuple[Metrics, list[str]]:
    """The metrics of a set of pods, and what is missing for them; a quantity missing for one pod is unknown."""
    problems: dict[str, None] = {}

    def column(key: str) -> list[float] | None:
        values = [series[key].get(p) for p in pods]
        absent = sum(v is None for v in values)
        bad = sum(v is not None and not math.isfinite(v) for v in values)
        if absent:
            problems[f"{names[key]} missing for {absent} of {len(pods)} pods"] = None
        if bad:
            problems[f"{names[key]} is NaN or infinite for {bad} of {len(pods)} pods"] = None
        return None if absent or bad else [v for v in values if v is not None]

    def total(key: str) -> float | None:
        values = column(key)
        return None if values is None else math.fsum(values)

    def mean(prefix: str, scale: float = 1.0) -> float | None:
        sums, counts = total(f"{prefix}_sum"), total(f"{prefix}_count")
        if sums is None or counts is None or counts <= 0:
            return None
        return scale * sums / counts

    completions, growth = total("requests"), total("growth")
    kv_cache = column("kv_cache")
    metrics = Metrics(
        arrival_rps=None if completions is None or growth is None else completions + max(0.0, growth),
        completion_rps=completions,
        in_tokens=mean("in"),
        out_tokens=mean("out"),
        ttft_ms=mean("ttft", 1000.0),
        itl_ms=mean("itl", 1000.0),
        running=total("running"),
        waiting=total("waiting"),
        kv_cache=math.fsum(kv_cache) / len(kv_cache) if kv_cache else None,
    )
    return metrics, list(problems)


def _measured_load(metrics: Metrics) -> tuple[Load | None, list[str]]:
    """The load Prometheus measured, or why there is none."""
    if metrics.arrival_rps is None:
        return None, ["no request rate"]
    if metrics.arrival_rps > 0 and (metrics.in_tokens is None or metrics.out_tokens is None):
        return None, ["requests finished but no token counts were observed"]
    return Load(60.0 * metrics.arrival_rps, metrics.in_tokens, metrics.out_tokens, LOAD_PROMETHEUS), []


def _label_load(deployments: Sequence[Deployment]) -> tuple[Load | None, list[str]]:
    """The fallback load of the first Deployment (by namespace and name) that has the rpm label."""
    labelled = next((d for d in deployments if LOAD_RPM_LABEL in d.labels), None)
    if labelled is None:
        return None, []
    labels = labelled.labels
    try:
        rpm = _non_negative(labels[LOAD_RPM_LABEL], LOAD_RPM_LABEL)
        tokens = [
            None if labels.get(k) is None else _non_negative(labels[k], k) for k in (LOAD_IN_LABEL, LOAD_OUT_LABEL)
        ]
    except ValueError as exc:
        return None, [f"{labelled.namespace}/{labelled.name}: {exc}"]
    return Load(rpm, tokens[0], tokens[1], LOAD_LABELS), []


def _non_negative(text: str, label: str) -> float:
    """A label's value as a finite number >= 0; ValueError naming the label otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"label {label}={text!r} is not a non-negative number")
    return value


def _label_conflicts(deployments: Sequence[Deployment]) -> list[str]:
    """Disagreements of a server's variants about its model or class."""
    problems = []
    for label, default in ((MODEL_LABEL, ""), (CLASS_LABEL, DEFAULT_CLASS)):
        values = sorted({d.labels.get(label) or default for d in deployments})
        if len(values) > 1:
            problems.append(f"its Deployments disagree on {label}: {', '.join(values)}")
    return problems


# --- the optimizer's input -------------------------------------------------------------------


def observe_system(
    spec: SystemSpec, snapshot: Snapshot, gpu_products: Mapping[str, str] | None = None
) -> ObservedSystem:
    """``spec`` with each observed server's load and current allocation, and the node inventory as capacity.

    A complete server gets ``currentAlloc`` = its main variant (most replicas) with the observed load (req/min)
    and latencies; a configured server with problems, or without Deployments, is left as configured and
    flagged. A server found only in the cluster is added when its model and class labels name known
    entries. With a node inventory, the capacity is the cards per type it holds, where a configured
    capacity entry overrides its type. Unknown token counts (an idle server) keep the configured ones.
    """
    configured = {s.name: s for s in spec.server_data.servers}
    models = {m.name for m in spec.model_data.models}
    classes = {c.name for c in spec.service_class_data.service_classes}
    flagged: dict[str, tuple[str, ...]] = {}
    notes: dict[str, tuple[str, ...]] = {}
    servers = dict(configured)
    for observed in snapshot.servers:
        name = observed.name
        base = configured.get(name)
        if observed.notes:
            notes[name] = observed.notes
        if base is None:
            if observed.model not in models or observed.class_name not in classes:
                flagged[name] = (
                    f"not in the system, and its labels name no known model and class "
                    f"(model {observed.model!r}, class {observed.class_name!r})",
                )
                continue
            base = ServerSpec(name=name, class_name=observed.class_name, model=observed.model)
            notes[name] = (*notes.get(name, ()), "not in the system; added from its labels")
        servers[name] = base
        if not observed.complete:
            flagged[name] = observed.problems or ("no load",)
            continue
        servers[name] = base.model_copy(update={"current_alloc": _current_alloc(base.current_alloc, observed)})
    seen = {s.name for s in snapshot.servers}
    flagged.update({name: ("no managed Deployment found",) for name in configured if name not in seen})
    capacity, warnings = _capacity(spec, snapshot.gpus, gpu_products or {})
    server_data = spec.server_data.model_copy(update={"servers": tuple(servers.values())})
    return ObservedSystem(
        spec=spec.model_copy(update={"server_data": server_data, "capacity_data": capacity}),
        flagged=flagged,
        notes=notes,
        warnings=tuple(warnings),
    )


def _current_alloc(alloc: AllocationData, observed: ObservedServer) -> AllocationData:
    assert observed.load is not None  # a complete server has a load
    used = [v for v in observed.variants if v.replicas > 0]
    main = max(used, key=lambda v: (v.replicas, v.accelerator)) if used else None
    load = LoadSpec(
        arrival_rate=observed.load.arrival_rpm,
        avg_in_tokens=alloc.load.avg_in_tokens if observed.load.in_tokens is None else observed.load.in_tokens,
        avg_out_tokens=alloc.load.avg_out_tokens if observed.load.out_tokens is None else observed.load.out_tokens,
    )
    m = observed.metrics
    return alloc.model_copy(
        update={
            "accelerator": main.accelerator if main else "",
            "num_replicas": main.replicas if main else 0,
            "max_batch": (main.max_num_seqs or 0) if main else 0,
            "load": load,
            "itl_average": alloc.itl_average if m.itl_ms is None else m.itl_ms,
            "ttft_average": alloc.ttft_average if m.ttft_ms is None else m.ttft_ms,
        }
    )


def _capacity(
    spec: SystemSpec, gpus: Mapping[str, int] | None, products: Mapping[str, str]
) -> tuple[CapacityData, list[str]]:
    """The node inventory in cards per type, configured entries winning; warnings for unknown products."""
    if gpus is None:
        return spec.capacity_data, []
    types = {a.type for a in spec.accelerator_data.accelerators}
    counts: dict[str, int] = {}
    warnings = []
    for product, cards in sorted(gpus.items()):
        card_type = products.get(product) or _product_type(product, types)
        if card_type is None:
            warnings.append(f"GPU product {product!r} matches no accelerator type; map it in INFERNO_GPU_PRODUCTS")
            continue
        counts[card_type] = counts.get(card_type, 0) + cards
    counts.update({c.type: c.count for c in spec.capacity_data.count})
    return CapacityData(count=tuple(AcceleratorCount(type=t, count=n) for t, n in sorted(counts.items()))), warnings


def _product_type(product: str, types: Iterable[str]) -> str | None:
    """The one accelerator type that is a word of the product label ('NVIDIA-A100-SXM4-80GB' -> 'A100')."""
    words = set(re.split(r"[^A-Z0-9]+", product.upper()))
    matches = [t for t in types if t.upper() in words]
    return matches[0] if len(matches) == 1 else None
