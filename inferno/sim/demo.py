"""``inferno demo``: the real control loop against emulated vLLM servers, an in-memory cluster and live load.

Two servers of a 70B-class model share three kinds of accelerator: ``chat`` (Premium: mean TTFT 1 s, ITL
50 ms) on H100 or A100 replicas, and ``batch`` (Free: 4 s, 150 ms) on A100 or L4 replicas. Each variant
is a Deployment in an in-memory :class:`~inferno.sim.cluster.Cluster`; a
:class:`~inferno.sim.cluster.Kubelet` runs its replicas as emulated vLLM pods (:mod:`inferno.sim.emulator`,
behind one endpoint per server) that take ``startup_s`` to become ready. Open-loop load from
:mod:`inferno.loadgen` follows a traffic shape per server (:mod:`inferno.sim.traffic`): chat ramps up
and back down, batch has a burst. A real Prometheus scrapes the pods when the ``prometheus`` binary is
installed; otherwise the built-in :class:`~inferno.sim.scraper.Scraper` reads their ``/metrics`` (the
demo says which). The unmodified :class:`~inferno.controller.Controller` (collector, EKF tuner, MILP
optimizer, safety limits, actuator patching the Deployments) runs one cycle per period.

With ``time_scale`` X everything runs X times faster: emulated pods, start-up, traffic, controller
period, metrics window and the limits' windows. The controller then sees rates X times higher and
latencies X times shorter than the emulated ones, so it is given the same system with its times divided
by X (iteration parameters, SLOs) and rates multiplied by X, which leaves every decision the same. The
demo reports emulated units throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferno.actuator import KubeActuator
from inferno.collector import Collector
from inferno.config import LimitSettings, Settings
from inferno.controller import Controller, CycleRecord
from inferno.errors import CollectError, ConfigError
from inferno.interfaces import SnapshotSource
from inferno.k8s import (
    ACCELERATOR_LABEL,
    MODEL_LABEL,
    SERVER_LABEL,
    Deployment,
    current_max_num_seqs,
    find_vllm_container,
)
from inferno.loadgen import Request, RequestResult, run_load_async
from inferno.optimizer import OptimizerOptions
from inferno.prometheus import MetricsApi
from inferno.prometheus import connect as connect_prometheus
from inferno.sim.cluster import Cluster, Kubelet, managed_deployment
from inferno.sim.emulator import EmulatedPod, EmulatedService, EmulatorConfig, EmulatorHost
from inferno.sim.prometheus_process import PrometheusProcess, find_prometheus
from inferno.sim.replica import EngineConfig
from inferno.sim.scraper import Scraper
from inferno.sim.traffic import Traffic, TrafficSpec
from inferno.spec import SystemConfig, SystemSpec
from inferno.state import Snapshot
from inferno.telemetry import Telemetry
from inferno.tuner import EKFTuner, seeds_from_spec

__all__ = ["DemoOptions", "DemoSummary", "ServerSummary", "run_demo"]

NAMESPACE = "demo"
MODEL = "llama-3.3-70b"

ACCELERATORS = {  # name -> (type, cost cents/hour per card, cards per replica, alpha, beta, gamma of the model)
    "H100": ("H100", 390.0, 4, 12.448, 0.1296, 2.445e-05),
    "A100": ("A100", 180.0, 4, 19.5, 0.3111, 4.096e-05),
    "L4": ("L4", 55.0, 8, 60.333, 0.4321, 0.0001365),
}
CARDS = {"H100": 16, "A100": 16, "L4": 32}
CLASSES = {"Premium": (1, 1000.0, 50.0), "Free": (100, 4000.0, 150.0)}
"""class -> (priority, mean TTFT target ms, mean ITL target ms)."""


@dataclass(frozen=True)
class _Server:
    name: str
    service_class: str
    variants: tuple[str, ...]
    initial: dict[str, int]
    in_tokens: float
    out_tokens: float


SERVERS = (
    _Server("chat", "Premium", ("H100", "A100"), {"A100": 1}, 512, 256),
    _Server("batch", "Free", ("A100", "L4"), {"L4": 1}, 1024, 256),
)


def _traffic(server: _Server, span_s: float) -> TrafficSpec:
    """Chat follows a day squeezed into the run (0.7 -> 4.9 -> 0.7 req/s); batch is 0.5 req/s with a x4 burst."""
    lengths = {
        "in_tokens": {"mean": server.in_tokens, "distribution": "lognormal", "sigma": 0.5},
        "out_tokens": {"mean": server.out_tokens, "distribution": "lognormal", "sigma": 0.5},
    }
    arrivals: dict[str, Any]
    if server.name == "chat":
        arrivals = {"shape": "diurnal", "mean_rps": 2.8, "amplitude": 0.75, "period_s": span_s, "peak_s": 0.5 * span_s}
    else:
        base = {"shape": "steady", "rate_rps": 0.5}
        burst = {"at_s": 0.3 * span_s, "duration_s": 0.4 * span_s, "factor": 4.0}
        arrivals = {"shape": "bursty", "base": base, "bursts": [burst]}
    return TrafficSpec.model_validate({"arrivals": arrivals, **lengths})


def demo_system(time_scale: float = 1.0) -> SystemSpec:
    """The demo's system, with its times divided and its rates multiplied by ``time_scale``."""
    x = time_scale
    accelerators = [
        {
            "name": name,
            "type": acc_type,
            "multiplicity": 1,
            "memSize": 80,
            "memBW": 2000,
            "power": {"idle": 60, "full": 400, "midPower": 250, "midUtil": 0.6},
            "cost": cost,
        }
        for name, (acc_type, cost, *_) in ACCELERATORS.items()
    ]
    models = [
        {
            "name": MODEL,
            "acc": name,
            "accCount": cards,
            "maxBatchSize": 256,
            "atTokens": 512,
            "perfParms": {"alpha": alpha / x, "beta": beta / x, "gamma": gamma / x},
        }
        for name, (_, _, cards, alpha, beta, gamma) in ACCELERATORS.items()
    ]
    classes = [
        {
            "name": name,
            "priority": priority,
            "modelTargets": [{"model": MODEL, "slo-ttft": ttft / x, "slo-itl": itl / x}],
        }
        for name, (priority, ttft, itl) in CLASSES.items()
    ]
    servers = [
        {
            "name": s.name,
            "class": s.service_class,
            "model": MODEL,
            "minNumReplicas": 1,
            "currentAlloc": {"load": {"arrivalRate": 60 * x, "avgInTokens": s.in_tokens, "avgOutTokens": s.out_tokens}},
        }
        for s in SERVERS
    ]
    document = {
        "accelerators": accelerators,
        "capacity": [{"type": t, "count": n} for t, n in CARDS.items()],
        "models": models,
        "serviceClasses": classes,
        "servers": servers,
        "optimizer": {"unlimited": False, "heterogeneous": False},
    }
    return SystemConfig.model_validate(document).to_system()


@dataclass(frozen=True)
class DemoOptions:
    """How long and how fast the demo runs."""

    duration_s: float = 180.0
    """Wall-clock length of the run (after the set-up)."""
    time_scale: float = 1.0
    """Run this many times faster than real time."""
    use_prometheus: bool | None = None
    """True: require the prometheus binary; False: the built-in scraper; None: Prometheus when installed."""
    seed: int = 0
    startup_s: float = 15.0
    """Emulated seconds a new vLLM pod takes to become ready."""
    period_s: float = 10.0
    """Emulated seconds between controller cycles."""
    window_s: float = 20.0
    """Emulated metrics window (at least 4 wall-clock seconds: 4 scrapes)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ConfigError(f"the time scale must be a number > 0 (got {self.time_scale})")
        if not (math.isfinite(self.duration_s) and self.duration_s >= 5):
            raise ConfigError(f"the duration must be at least 5 s (got {self.duration_s})")

    def wall(self, emulated_s: float, floor: float = 0.0) -> float:
        """Wall-clock seconds of ``emulated_s``, at least ``floor``."""
        return max(floor, emulated_s / self.time_scale)


@dataclass(frozen=True)
class ServerSummary:
    """What one server saw over the run (emulated units)."""

    name: str
    service_class: str
    slo_ttft_ms: float
    slo_itl_ms: float
    load_rps: tuple[float, float]
    """Lowest and highest observed arrival rate."""
    mean_ttft_ms: float | None
    """Mean over the cycles that had metrics."""
    mean_itl_ms: float | None
    slo_met: float | None
    """Share of those cycles whose mean TTFT and ITL met the SLOs."""
    replicas: dict[str, tuple[int, int, int]]
    """Accelerator -> (fewest, most, final) replicas asked for."""
    requests: int
    """Requests planned for it (sent open-loop while the run lasts)."""


@dataclass(frozen=True)
class DemoSummary:
    """The closing figures of a run."""

    metrics_source: str
    emulated_s: float
    cycles: dict[str, int]
    actions: tuple[str, ...]
    """Every applied action, with the emulated time it was applied at."""
    servers: tuple[ServerSummary, ...]
    spend_dollars: float
    """Accelerator cost of all pods (starting ones included) over the emulated time."""
    mean_cost_per_hour: float
    """Dollars per hour, averaged over the run."""

    @property
    def scaled(self) -> bool:
        """Whether the controller changed anything."""
        return bool(self.actions)


class _PodRuntime:
    """Runs the Kubelet's pods as emulated vLLM pods behind one service per server."""

    def __init__(self, host: EmulatorHost, services: dict[str, EmulatedService], options: DemoOptions) -> None:
        self.host = host
        self.services = services
        self.options = options
        self.startup_s = 0.0
        """Start-up delay of pods started from now on (0 while the cluster is set up)."""
        self.pods: dict[tuple[str, str], tuple[str, EmulatedPod]] = {}

    def start(self, deployment: Deployment, pod: str) -> None:
        labels = deployment.labels
        _, _, _, alpha, beta, gamma = ACCELERATORS[labels[ACCELERATOR_LABEL]]
        seqs = current_max_num_seqs(deployment, find_vllm_container(deployment)) or 256
        config = EmulatorConfig(
            labels[MODEL_LABEL],
            EngineConfig(alpha, beta, gamma, seqs),
            startup_s=self.startup_s,
            time_scale=self.options.time_scale,
            tick_s=0.5,
            max_model_len=65536,
        )
        emulated = EmulatedPod(config, labels={"namespace": deployment.namespace, "pod": pod})
        server = labels[SERVER_LABEL]
        self.pods[deployment.namespace, pod] = (server, emulated)
        self.host.call(lambda: self.services[server].add(emulated))

    def stop(self, namespace: str, pod: str) -> None:
        found = self.pods.pop((namespace, pod), None)
        if found is not None:
            server, emulated = found
            self.host.call(lambda: self.services[server].retire(emulated))

    def ready(self, namespace: str, pod: str) -> bool:
        found = self.pods.get((namespace, pod))
        return found is not None and found[1].ready()


class _Recorder:
    """A snapshot source that keeps the last snapshot it gave."""

    def __init__(self, source: SnapshotSource) -> None:
        self.source = source
        self.last: Snapshot | None = None

    def collect(self) -> Snapshot:
        self.last = None
        self.last = self.source.collect()
        return self.last


class _Load(threading.Thread):
    """Open-loop load on every server from one event loop (the load generator of inferno.loadgen)."""

    def __init__(self, jobs: Sequence[tuple[str, str, list[Request]]], timeout_s: float) -> None:
        super().__init__(name="demo-load", daemon=True)
        self.jobs = jobs
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self.results: list[list[RequestResult]] = []
        self._task: asyncio.Task[list[list[RequestResult]]] | None = None
        self._started = threading.Event()

    def run(self) -> None:
        async def everything() -> list[list[RequestResult]]:
            return list(
                await asyncio.gather(
                    *(
                        run_load_async(
                            url, model, requests, timeout_s=self.timeout_s, max_in_flight=4096, stream_interval=64
                        )
                        for url, model, requests in self.jobs
                    )
                )
            )

        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(everything())
        self._started.set()
        try:
            self.results = self.loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()

    def stop(self) -> None:
        """Stop sending and abandon the requests in flight."""
        self._started.wait(10)
        if self._task is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._task.cancel)
        self.join(30)


@dataclass
class _Tracker:
    """What the run saw, cycle by cycle."""

    loads: dict[str, list[float]] = field(default_factory=dict)
    ttft: dict[str, list[float]] = field(default_factory=dict)
    itl: dict[str, list[float]] = field(default_factory=dict)
    met: dict[str, list[bool]] = field(default_factory=dict)
    replicas: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    cycles: dict[str, int] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)


Reporter = Callable[[str], None]
HEADER = (
    f"{'t (s)':>6}  {'server':<6} {'load r/s':>8}  {'replicas ready/asked':<22} {'TTFT ms (SLO)':>14}"
    f" {'ITL ms (SLO)':>13} {'plan $/h':>8}  cycle"
)


def run_demo(options: DemoOptions, report: Reporter) -> DemoSummary:
    """Run the demo, passing each line of the live table to ``report``; the closing summary."""
    x = options.time_scale
    span_s = options.duration_s * x
    spec = demo_system(x)
    use_prometheus = options.use_prometheus
    binary = find_prometheus() if use_prometheus is not False else None
    if use_prometheus and binary is None:
        raise ConfigError("--prometheus needs the prometheus binary (apt-get install prometheus); it is not installed")
    host = EmulatorHost()
    with contextlib.ExitStack() as stack:
        stack.callback(host.close)
        services = {s.name: EmulatedService(MODEL) for s in SERVERS}
        urls = {name: host.serve(service) for name, service in services.items()}
        runtime = _PodRuntime(host, services, options)
        cluster = Cluster()
        for s in SERVERS:
            for acc in s.variants:
                cluster.add(
                    managed_deployment(
                        f"{s.name}-{acc.lower()}",
                        namespace=NAMESPACE,
                        server=s.name,
                        model=MODEL,
                        accelerator=acc,
                        service_class=s.service_class,
                        replicas=s.initial.get(acc, 0),
                        max_num_seqs=64,
                    )
                )
        kubelet = Kubelet(cluster, runtime)
        kubelet.reconcile()  # the cluster as it runs before the demo: its pods are up
        stack.callback(kubelet.stop_all)
        runtime.startup_s = options.startup_s
        window = options.wall(options.window_s, floor=4.0)
        metrics: MetricsApi
        if binary is not None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inferno-demo-")))
            prometheus = PrometheusProcess(binary, directory, scrape_interval_s=1.0)
            stack.callback(prometheus.close)
            for url in urls.values():
                prometheus.add_target(url.removeprefix("http://"))
            up = 'count(up{job="vllm"} == 1)'
            prometheus.wait(lambda: _count(prometheus.query(up)) >= len(urls), 60, "Prometheus did not scrape the pods")
            settings = Settings(
                prometheus_url=prometheus.url, metrics_window=f"{round(window * 1000)}ms", namespaces=(NAMESPACE,)
            )
            source = f"a real Prometheus ({binary}) scraping every second"
            metrics = _prometheus(settings)
        else:
            scraper = Scraper(lambda: {url: {} for url in urls.values()}, interval_s=1.0)
            scraper.start()
            stack.callback(scraper.stop)
            why = "not installed" if use_prometheus is None else "not asked for"
            source = f"the built-in scraper reading the pods' /metrics every second (prometheus binary {why})"
            metrics = scraper
            settings = Settings(metrics_window=f"{round(window * 1000)}ms", namespaces=(NAMESPACE,))
        report(f"metrics: {source}")
        report(
            f"emulating {span_s:.0f} s in {options.duration_s:.0f} s (x{x:g}); cycle every {options.period_s:g} s, "
            f"window {window * x:.0f} s, pod start-up {options.startup_s:g} s (emulated)"
        )
        recorder = _Recorder(Collector(cluster, metrics, settings))
        limits = _limits(x)
        controller = Controller(
            system=spec,
            collector=recorder,
            actuator=KubeActuator(cluster),
            options=OptimizerOptions(solver="milp", time_limit_s=2.0),
            limits=limits,
            telemetry=Telemetry(),
            tuner=EKFTuner(settings.queue_model, seeds=seeds_from_spec(spec, settings.queue_model)),
        )
        rng = np.random.default_rng(options.seed)
        jobs = []
        for s in SERVERS:
            requests = Traffic(_traffic(s, span_s)).requests(0.0, span_s, rng)
            plan = [
                Request(float(t) / x, int(a), int(b))
                for t, a, b in zip(requests.times, requests.in_tokens, requests.out_tokens, strict=True)
            ]
            jobs.append((urls[s.name], MODEL, plan))
        tracker = _Tracker()
        spend = _Spend(cluster, kubelet, options)
        load = _Load(jobs, timeout_s=max(30.0, 300.0 / x))
        stop = threading.Event()
        housekeeping = threading.Thread(target=_housekeep, args=(kubelet, spend, stop), name="kubelet", daemon=True)
        start = time.monotonic()
        spend.start = start
        load.start()
        housekeeping.start()
        report(HEADER)
        try:
            next_cycle = start + options.wall(options.period_s, floor=1.0)
            period = options.wall(options.period_s, floor=1.0)
            end = start + options.duration_s
            while True:
                now = time.monotonic()
                if next_cycle >= end:
                    time.sleep(max(0.0, end - now))
                    break
                time.sleep(max(0.0, next_cycle - now))
                record = controller.cycle()
                at = (time.monotonic() - start) * x
                for line in _rows(record, recorder.last, cluster, tracker, at, x):
                    report(line)
                next_cycle += period * max(1, math.ceil((time.monotonic() - next_cycle) / period))
        finally:
            stop.set()
            housekeeping.join(10)
            load.stop()
        elapsed = (time.monotonic() - start) * x
        summary = _summary(source, elapsed, tracker, spend, jobs)
    return summary


def _limits(x: float) -> LimitSettings:
    """The default limits with every window in emulated seconds (a shorter scale-down window and cooldown)."""
    windows = {k: v / x for k, v in LimitSettings().model_dump().items() if k.endswith("_s")}
    return LimitSettings(**(windows | {"scale_down_window_s": 60.0 / x, "max_num_seqs_cooldown_s": 600.0 / x}))


def _prometheus(settings: Settings) -> MetricsApi:
    client = connect_prometheus(settings)
    if client is None:  # pragma: no cover - the URL is set
        raise CollectError("no Prometheus URL")
    return client


def _count(result: list[dict[str, object]]) -> int:
    """The value of a one-sample instant vector (0 when empty)."""
    value = result[0].get("value") if result else None
    return int(float(value[1])) if isinstance(value, list) and len(value) == 2 else 0


class _Spend:
    """Accelerator cost of the pods that exist, integrated over emulated time."""

    def __init__(self, cluster: Cluster, kubelet: Kubelet, options: DemoOptions) -> None:
        self.cluster, self.kubelet, self.options = cluster, kubelet, options
        self.start = time.monotonic()
        self._last = self.start
        self.cents = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        hours = (now - self._last) * self.options.time_scale / 3600
        self._last = now
        for namespace, name in self.cluster.names():
            accelerator = self.cluster.get_deployment(namespace, name).labels.get(ACCELERATOR_LABEL, "")
            _, cost, cards, *_ = ACCELERATORS[accelerator]
            self.cents += len(self.kubelet.pods(namespace, name)) * cost * cards * hours


def _housekeep(kubelet: Kubelet, spend: _Spend, stop: threading.Event) -> None:
    """Keep pods in line with the Deployments and count their cost, ten times a second."""
    while not stop.wait(0.1):
        kubelet.reconcile()
        spend.tick()


def _fmt(value: float | None, target: float, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f} ({target:g})"


def _rows(
    record: CycleRecord, snapshot: Snapshot | None, cluster: Cluster, tracker: _Tracker, at: float, x: float
) -> list[str]:
    """The live table's lines for one cycle, and what the summary needs from it."""
    tracker.cycles[record.outcome] = tracker.cycles.get(record.outcome, 0) + 1
    applied = {r.action.deployment: r.action for r in record.results if r.outcome == "applied"}
    tracker.actions += [f"t={at:.0f}s {a.describe()}" for a in applied.values()]
    lines = []
    for i, s in enumerate(SERVERS):
        _, slo_ttft, slo_itl = CLASSES[s.service_class]
        observed = snapshot.server(s.name) if snapshot is not None else None
        m = observed.metrics if observed is not None else None
        load = m.arrival_rps / x if m is not None and m.arrival_rps is not None else None
        ttft = m.ttft_ms * x if m is not None and m.ttft_ms is not None else None
        itl = m.itl_ms * x if m is not None and m.itl_ms is not None else None
        if load is not None:
            tracker.loads.setdefault(s.name, []).append(load)
        if ttft is not None and itl is not None:
            tracker.ttft.setdefault(s.name, []).append(ttft)
            tracker.itl.setdefault(s.name, []).append(itl)
            tracker.met.setdefault(s.name, []).append(ttft <= slo_ttft and itl <= slo_itl)
        parts = []
        for acc in s.variants:
            d = cluster.get_deployment(NAMESPACE, f"{s.name}-{acc.lower()}")
            tracker.replicas.setdefault((s.name, acc), []).append(d.replicas)
            if d.replicas or d.ready_replicas:
                parts.append(f"{acc} {d.ready_replicas}/{d.replicas}")
        allocation = record.plan.allocations.get(s.name) if record.plan else None
        cost = f"{allocation.cost / 100:.2f}" if allocation is not None else "-"
        notes = [a.describe().split(": ", 1)[-1] for d, a in applied.items() if d.startswith(f"{s.name}-")]
        if s.name in record.flagged:
            notes.append("held: " + record.flagged[s.name][0][:60])
        outcome = record.outcome if i == 0 else ""
        note = f"{outcome}{': ' if outcome and notes else ''}{'; '.join(notes)}"
        lines.append(
            f"{(f'{at:.0f}' if i == 0 else ''):>6}  {s.name:<6} {('-' if load is None else f'{load:.2f}'):>8}  "
            f"{', '.join(parts) or '-':<22} {_fmt(ttft, slo_ttft):>14} {_fmt(itl, slo_itl, 1):>13} {cost:>8}  {note}"
        )
    return lines


def _summary(
    source: str, elapsed: float, tracker: _Tracker, spend: _Spend, jobs: Sequence[tuple[str, str, list[Request]]]
) -> DemoSummary:
    servers = []
    for s, (_, _, plan) in zip(SERVERS, jobs, strict=True):
        _, slo_ttft, slo_itl = CLASSES[s.service_class]
        ttft, itl, met = tracker.ttft.get(s.name, []), tracker.itl.get(s.name, []), tracker.met.get(s.name, [])
        loads = tracker.loads.get(s.name, [])
        replicas = {}
        for acc in s.variants:
            seen = tracker.replicas.get((s.name, acc)) or [s.initial.get(acc, 0)]
            replicas[acc] = (min(seen), max(seen), seen[-1])
        servers.append(
            ServerSummary(
                name=s.name,
                service_class=s.service_class,
                slo_ttft_ms=slo_ttft,
                slo_itl_ms=slo_itl,
                load_rps=(min(loads), max(loads)) if loads else (math.nan, math.nan),
                mean_ttft_ms=sum(ttft) / len(ttft) if ttft else None,
                mean_itl_ms=sum(itl) / len(itl) if itl else None,
                slo_met=sum(met) / len(met) if met else None,
                replicas=replicas,
                requests=len(plan),
            )
        )
    hours = elapsed / 3600
    return DemoSummary(
        metrics_source=source,
        emulated_s=elapsed,
        cycles=dict(tracker.cycles),
        actions=tuple(tracker.actions),
        servers=tuple(servers),
        spend_dollars=spend.cents / 100,
        mean_cost_per_hour=spend.cents / 100 / hours if hours > 0 else 0.0,
    )
