"""Closed-loop simulation: a scaling policy driving a fast model of a cluster of vLLM servers.

A :class:`Scenario` (YAML) names a system file, the traffic of each server, the true performance
parameters and the timing of the loop. The *data plane* is piecewise stationary: every ``step_s`` the
offered rate of a server (the mean of its traffic's rate over the tick) is split over its ready
variants in proportion to their capacity, and each replica is evaluated with the TRUE queue model
("iteration"), which gives the mean TTFT, ITL and throughput of the tick. Requests beyond the
throughput join a fluid backlog that drains when there is spare throughput; they count as missing the
SLO. The served requests of a tick whose mean TTFT and mean ITL meet the class targets count as met
(a mean-based approximation).

Every ``period_s`` the policy sees what Prometheus would show (windowed means over the period, with
multiplicative noise) as a :class:`~inferno.state.Snapshot`, and changes the cluster through
:class:`SimActuator`. New replicas wait for cards (pending), then take ``startup_s`` to become ready;
a ``--max-num-seqs`` change restarts the variant's replicas. Cost is the replicas holding cards
(starting or ready) times their cost per hour, integrated over time.

Policies (:data:`POLICIES`): ``inferno`` (the real :class:`~inferno.controller.Controller`), ``hpa``,
``saturation``, ``static-peak`` and ``oracle``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inferno.actuator import plan_actions
from inferno.collector import observe_system
from inferno.config import LimitSettings, PredictorSettings
from inferno.controller import Controller
from inferno.errors import ConfigError, Problem
from inferno.optimizer import OptimizerOptions, optimize
from inferno.predictor import PREDICTORS, Forecaster, History, make_predictor
from inferno.queueing import QueueMetrics, QueueModel, Workload, make_queue_model
from inferno.sim.traffic import Traffic, TrafficSpec
from inferno.spec import SystemSpec
from inferno.state import (
    LOAD_PROMETHEUS,
    Action,
    ActionResult,
    Actuation,
    Load,
    Metrics,
    ObservedServer,
    PodMetrics,
    Snapshot,
    Variant,
)
from inferno.system import format_location, load_system
from inferno.telemetry import Telemetry
from inferno.tuner import EKFTuner, seeds_from_spec

__all__ = [
    "POLICIES",
    "ClosedLoop",
    "LoadedScenario",
    "Result",
    "Scenario",
    "load_scenario",
    "make_policy",
    "plot_result",
    "simulate_scenario",
]

NAMESPACE = "sim"
QUEUE_PER_BATCH = 10
"""Q = 10 N, as the optimizer assumes."""
SAMPLES_PER_TICK = 4
"""Points at which the traffic's rate is averaged over a tick."""
MIN_RATE_RPS = 1e-9


# --- the scenario -------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InitialSpec(_Spec):
    """Where a server starts: replicas of one accelerator, ready at time 0."""

    accelerator: str = Field(description="Accelerator configuration of the system.")
    replicas: int = Field(1, ge=0, description="Ready replicas at time 0.")
    max_batch: int | None = Field(None, ge=1, description="--max-num-seqs (default: the model's maxBatchSize).")


class TruthSpec(_Spec):
    """The true iteration parameters of a model on an accelerator."""

    alpha: float = Field(gt=0, allow_inf_nan=False)
    beta: float = Field(gt=0, allow_inf_nan=False)
    gamma: float = Field(gt=0, allow_inf_nan=False)


class ServerScenario(_Spec):
    """One server of the scenario: its traffic and optional start."""

    traffic: TrafficSpec
    initial: InitialSpec | None = Field(
        None, description="Start allocation (default: what the optimizer sizes for the load at time 0)."
    )


class Scenario(_Spec):
    """A closed-loop experiment (see the module docstring)."""

    system: Path = Field(description="System file (inferno flat YAML), relative to the scenario file.")
    duration_s: float = Field(gt=0, allow_inf_nan=False, description="Simulated time (s).")
    period_s: float = Field(60.0, gt=0, allow_inf_nan=False, description="Control period (s).")
    step_s: float = Field(10.0, gt=0, allow_inf_nan=False, description="Data-plane tick (s).")
    startup_s: float = Field(120.0, ge=0, allow_inf_nan=False, description="Replica start-up delay (s).")
    metrics_noise: float = Field(0.03, ge=0, le=0.5, description="Relative noise of the metrics.")
    seed: int = Field(0, description="Seed of the metrics noise.")
    tune: bool = Field(False, description="Run the EKF tuner in the inferno policies.")
    forecast_method: str = Field(
        "kalman", description="Load forecast method of the inferno-forecast policy (see inferno.predictor)."
    )
    truth: dict[str, TruthSpec] = Field(
        default_factory=dict, description="MODEL/ACCELERATOR -> true parameters (default: the system's perfParms)."
    )
    servers: dict[str, ServerScenario] = Field(min_length=1, description="Server name -> traffic and start.")


@dataclass(frozen=True)
class LoadedScenario:
    """A scenario with its file, system (restricted to the scenario's servers) and true models."""

    path: Path
    scenario: Scenario
    spec: SystemSpec
    truth: dict[tuple[str, str], QueueModel]
    traffic: dict[str, Traffic]

    @property
    def name(self) -> str:
        """The scenario file's stem."""
        return self.path.stem


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and check a scenario; ConfigError naming the file and the field of every problem."""
    path = Path(path)
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError([Problem(source, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, "", f"invalid YAML: {exc}")]) from exc
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(source, format_location(e["loc"]) or "(top level)", e["msg"]) for e in exc.errors(include_url=False)
        ]
        raise ConfigError(problems) from exc
    system_path = scenario.system if scenario.system.is_absolute() else path.parent / scenario.system
    spec = load_system(system_path).spec
    problems = []
    if scenario.forecast_method not in PREDICTORS:
        problems.append(Problem(source, "forecast_method", f"choose one of: {', '.join(PREDICTORS)}"))
    if scenario.step_s > scenario.period_s:
        problems.append(Problem(source, "step_s", f"must be at most period_s ({scenario.period_s:g})"))
    servers = {s.name: s for s in spec.server_data.servers}
    rows = {(r.name, r.acc): r for r in spec.model_data.models if r.perf_parms is not None}
    for name, server in scenario.servers.items():
        if name not in servers:
            problems.append(
                Problem(source, f"servers.{name}", f"not a server of {system_path}; choose from {', '.join(servers)}")
            )
        elif server.initial is not None and (servers[name].model, server.initial.accelerator) not in rows:
            problems.append(
                Problem(
                    source,
                    f"servers.{name}.initial.accelerator",
                    f"model {servers[name].model!r} has no perfParms on {server.initial.accelerator!r}",
                )
            )
    for key in scenario.truth:
        model, _, acc = key.partition("/")
        if (model, acc) not in rows:
            problems.append(Problem(source, f"truth.{key}", "not a MODEL/ACCELERATOR with perfParms in the system"))
    if problems:
        raise ConfigError(problems)
    kept = tuple(s for s in spec.server_data.servers if s.name in scenario.servers)
    spec = spec.model_copy(update={"server_data": spec.server_data.model_copy(update={"servers": kept})})
    truth: dict[tuple[str, str], QueueModel] = {}
    for (model, acc), row in rows.items():
        given = scenario.truth.get(f"{model}/{acc}")
        params = given.model_dump() if given else row.perf_parms.model_dump() if row.perf_parms else {}
        truth[(model, acc)] = make_queue_model(
            "iteration",
            {k: params[k] for k in ("alpha", "beta", "gamma")},
            max_batched_tokens=row.max_num_batched_tokens,
        )
    traffic = {name: Traffic(s.traffic, path.parent) for name, s in scenario.servers.items()}
    return LoadedScenario(path, scenario, spec, truth, traffic)


# --- the simulated cluster ----------------------------------------------------------------


@dataclass
class _Window:
    """Sums over the current metrics window of one variant (time-weighted)."""

    seconds: float = 0.0
    arrivals: float = 0.0
    """Requests offered (req)."""
    served: float = 0.0
    ttft: float = 0.0
    """Sum of TTFT x requests served."""
    itl: float = 0.0
    running: float = 0.0
    """Sum of mean batch per replica x seconds."""
    waiting: float = 0.0
    replica_s: float = 0.0
    """Ready replica-seconds."""


@dataclass
class SimVariant:
    """One Deployment: replicas of one accelerator configuration."""

    server: str
    accelerator: str
    acc_type: str
    cards_per_replica: int
    cost_per_replica: float
    """cents/hour of one replica."""
    truth: QueueModel
    max_batch: int
    ready: int = 0
    starting: list[float] = field(default_factory=list)
    """Ready times of the replicas holding cards that are not ready yet."""
    pending: int = 0
    """Replicas waiting for cards."""
    generation: int = 1
    window: _Window = field(default_factory=_Window)

    @property
    def replicas(self) -> int:
        """spec.replicas."""
        return self.ready + len(self.starting) + self.pending

    @property
    def holding(self) -> int:
        """Replicas holding cards (starting or ready): what costs."""
        return self.ready + len(self.starting)

    @property
    def deployment(self) -> str:
        """The Deployment's name."""
        return f"{self.server}-{self.accelerator.lower()}"


@dataclass
class SimServer:
    """One server: its variants, traffic and counters."""

    name: str
    model: str
    class_name: str
    traffic: Traffic
    ttft_slo: float
    itl_slo: float
    variants: dict[str, SimVariant]
    backlog: float = 0.0
    arrived: float = 0.0
    met: float = 0.0
    window_rate: float = 0.0
    window_s: float = 0.0


class ClosedLoop:
    """The simulated cluster: servers, their variants, time, cost and the counters of a run."""

    def __init__(self, loaded: LoadedScenario) -> None:
        self.loaded = loaded
        sc = loaded.scenario
        self.spec = loaded.spec
        self.now = 0.0
        self.startup_s = sc.startup_s
        self.rng = np.random.default_rng(sc.seed)
        self.cost = 0.0
        self.actions = 0
        self.restarts = 0
        self.capacity = {c.type: c.count for c in self.spec.capacity_data.count}
        self.unlimited = self.spec.optimizer_data.optimizer.unlimited
        accelerators = {a.name: a for a in self.spec.accelerator_data.accelerators}
        classes = {c.name: c for c in self.spec.service_class_data.service_classes}
        rows = {(r.name, r.acc): r for r in self.spec.model_data.models if r.perf_parms is not None}
        self.servers: dict[str, SimServer] = {}
        for s in self.spec.server_data.servers:
            cls = classes.get(s.class_name)
            target = next((t for t in (cls.model_targets if cls else ()) if t.model == s.model), None)
            variants = {}
            for (model, acc), row in sorted(rows.items()):
                if model != s.model or acc not in accelerators:
                    continue
                config = accelerators[acc]
                variants[acc] = SimVariant(
                    server=s.name,
                    accelerator=acc,
                    acc_type=config.type,
                    cards_per_replica=config.multiplicity * row.acc_count,
                    cost_per_replica=config.cost * row.acc_count,
                    truth=loaded.truth[(model, acc)],
                    max_batch=s.max_batch_size or row.max_batch_size,
                )
            self.servers[s.name] = SimServer(
                s.name,
                s.model,
                s.class_name,
                loaded.traffic[s.name],
                target.slo_ttft if target else 0.0,
                target.slo_itl if target else 0.0,
                variants,
            )
        self.per_class: dict[str, list[float]] = {}
        self.timeline: list[dict[str, Any]] = []

    # --- state --------------------------------------------------------------------------

    def variant(self, server: str, accelerator: str) -> SimVariant:
        """The variant of ``server`` on ``accelerator``."""
        return self.servers[server].variants[accelerator]

    def set_ready(self, server: str, accelerator: str, replicas: int, max_batch: int | None) -> None:
        """Put ``replicas`` ready replicas in place at once (a start state)."""
        v = self.variant(server, accelerator)
        v.ready, v.starting, v.pending = replicas, [], 0
        if max_batch:
            v.max_batch = max_batch

    def cards_used(self) -> dict[str, int]:
        """Cards held per type."""
        used: dict[str, int] = {}
        for s in self.servers.values():
            for v in s.variants.values():
                used[v.acc_type] = used.get(v.acc_type, 0) + v.holding * v.cards_per_replica
        return used

    def _schedule(self) -> None:
        """Pending replicas take free cards (servers in name order); starting ones become ready."""
        used = self.cards_used()
        for s in self.servers.values():
            for v in s.variants.values():
                while v.pending and (
                    self.unlimited or used.get(v.acc_type, 0) + v.cards_per_replica <= self.capacity.get(v.acc_type, 0)
                ):
                    v.pending -= 1
                    v.starting.append(self.now + self.startup_s)
                    used[v.acc_type] = used.get(v.acc_type, 0) + v.cards_per_replica
                done = [t for t in v.starting if t <= self.now]
                if done:
                    v.ready += len(done)
                    v.starting = [t for t in v.starting if t > self.now]

    def resize(self, v: SimVariant, replicas: int, max_batch: int | None) -> None:
        """Change a variant: a new --max-num-seqs restarts its replicas; new replicas start pending."""
        if max_batch is not None and max_batch != v.max_batch:
            v.max_batch = max_batch
            if v.holding:
                self.restarts += 1
                v.starting = [self.now + self.startup_s] * v.holding
                v.ready = 0
        delta = replicas - v.replicas
        if delta > 0:
            v.pending += delta
        remove = -delta
        for kind in ("pending", "starting", "ready"):
            if remove <= 0:
                break
            if kind == "pending":
                n = min(remove, v.pending)
                v.pending -= n
            elif kind == "starting":
                n = min(remove, len(v.starting))
                v.starting = sorted(v.starting)[: len(v.starting) - n]  # the latest to be ready go first
            else:
                n = min(remove, v.ready)
                v.ready -= n
            remove -= n
        v.generation += 1
        self._schedule()

    # --- the data plane -------------------------------------------------------------------

    def advance(self, until: float, step_s: float) -> None:
        """Run the data plane in ticks of ``step_s`` up to ``until``."""
        while self.now < until - 1e-9:
            dt = min(step_s, until - self.now)
            self._schedule()
            for s in self.servers.values():
                self._tick(s, dt)
            for s in self.servers.values():
                for v in s.variants.values():
                    self.cost += v.holding * v.cost_per_replica * dt / 3600.0
            self.now += dt

    def _tick(self, s: SimServer, dt: float) -> None:
        t0 = self.now
        points = t0 + dt * (np.arange(SAMPLES_PER_TICK) + 0.5) / SAMPLES_PER_TICK
        rate = float(np.mean(s.traffic.rate(points)))
        in_tokens, out_tokens = s.traffic.mean_tokens(t0 + dt / 2)
        workload = Workload(in_tokens, max(1.0, out_tokens))
        arrivals = rate * dt
        s.arrived += arrivals
        s.window_rate += arrivals
        s.window_s += dt
        ready = [v for v in s.variants.values() if v.ready > 0]
        caps = {
            v.accelerator: v.ready * v.truth.max_rate_rps(workload, v.max_batch, QUEUE_PER_BATCH * v.max_batch)
            for v in ready
        }
        total_cap = sum(caps.values())
        served_rate = 0.0
        met = 0.0
        for v in ready:
            share = rate * caps[v.accelerator] / total_cap if total_cap > 0 else 0.0
            per = share / v.ready
            w = v.window
            w.seconds += dt
            w.replica_s += v.ready * dt
            w.arrivals += share * dt
            if per < MIN_RATE_RPS:
                continue
            m: QueueMetrics = v.truth.analyze(per, workload, v.max_batch, QUEUE_PER_BATCH * v.max_batch)
            served = m.throughput_rps * v.ready * dt
            served_rate += m.throughput_rps * v.ready
            w.served += served
            w.ttft += m.ttft_ms * served
            w.itl += m.itl_ms * served
            w.running += m.in_service * v.ready * dt
            w.waiting += per * m.wait_ms / 1000.0 * v.ready * dt
            ok = (not s.ttft_slo or m.ttft_ms <= s.ttft_slo) and (not s.itl_slo or m.itl_ms <= s.itl_slo)
            if ok:
                met += served
        s.backlog += max(0.0, arrivals - served_rate * dt)
        spare = max(0.0, total_cap - served_rate) * dt
        s.backlog -= min(s.backlog, spare)
        if ready and s.backlog > 0:
            holders = sum(v.ready for v in ready)
            for v in ready:
                v.window.waiting += s.backlog * v.ready / holders * dt
        s.met += met
        tally = self.per_class.setdefault(s.class_name, [0.0, 0.0])
        tally[0] += met
        tally[1] += arrivals

    # --- what Prometheus shows -------------------------------------------------------------

    def _noisy(self, value: float | None, noise: float) -> float | None:
        if value is None or noise <= 0:
            return value
        return value * max(0.0, float(self.rng.normal(1.0, noise)))

    def snapshot(self, noise: float | None = None, loads: Mapping[str, float] | None = None) -> Snapshot:
        """The cluster as the collector would see it: window means since the last call, with noise.

        ``loads`` (server -> req/s) replaces the measured rates (the oracle's view); the window is then kept.
        """
        noise = self.loaded.scenario.metrics_noise if noise is None else noise
        servers = []
        for s in self.servers.values():
            in_tokens, out_tokens = s.traffic.mean_tokens(self.now)
            variants = []
            all_served = sum(v.window.served for v in s.variants.values())
            for v in s.variants.values():
                w = v.window
                metrics = Metrics()
                pods: tuple[PodMetrics, ...] = ()
                if w.replica_s > 0 and v.ready > 0:
                    reps = w.replica_s / w.seconds
                    served = w.served / w.seconds
                    per = Metrics(
                        arrival_rps=w.arrivals / w.seconds / reps,
                        completion_rps=served / reps,
                        in_tokens=in_tokens,
                        out_tokens=out_tokens,
                        ttft_ms=w.ttft / w.served if w.served > 0 else None,
                        itl_ms=w.itl / w.served if w.served > 0 else None,
                        running=w.running / w.replica_s,
                        waiting=w.waiting / w.replica_s,
                        kv_cache=min(1.0, w.running / w.replica_s / v.max_batch),
                    )
                    pods = tuple(
                        PodMetrics(NAMESPACE, f"{v.deployment}-{i}", self._metrics(per, noise)) for i in range(v.ready)
                    )
                    metrics = self._metrics(
                        Metrics(
                            arrival_rps=w.arrivals / w.seconds,
                            completion_rps=served,
                            in_tokens=in_tokens,
                            out_tokens=out_tokens,
                            ttft_ms=per.ttft_ms,
                            itl_ms=per.itl_ms,
                            running=w.running / w.seconds,
                            waiting=w.waiting / w.seconds,
                            kv_cache=per.kv_cache,
                        ),
                        noise,
                    )
                variants.append(
                    Variant(
                        namespace=NAMESPACE,
                        deployment=v.deployment,
                        server=s.name,
                        accelerator=v.accelerator,
                        replicas=v.replicas,
                        ready_replicas=v.ready,
                        updated_replicas=v.ready,
                        available_replicas=v.ready,
                        max_num_seqs=v.max_batch,
                        container="vllm",
                        resource_version=str(v.generation),
                        generation=v.generation,
                        metrics=metrics,
                        pods=pods,
                    )
                )
            true_rate = s.window_rate / s.window_s if s.window_s > 0 else s.traffic.rate(self.now)
            rate = loads[s.name] if loads is not None else self._noisy(true_rate, noise) or 0.0
            ttft = sum(v.window.ttft for v in s.variants.values()) / all_served if all_served > 0 else None
            itl = sum(v.window.itl for v in s.variants.values()) / all_served if all_served > 0 else None
            server_metrics = Metrics(
                arrival_rps=rate,
                in_tokens=in_tokens,
                out_tokens=out_tokens,
                ttft_ms=self._noisy(ttft, noise),
                itl_ms=self._noisy(itl, noise),
            )
            servers.append(
                ObservedServer(
                    name=s.name,
                    model=s.model,
                    class_name=s.class_name,
                    variants=tuple(variants),
                    metrics=server_metrics,
                    load=Load(60.0 * rate, in_tokens, out_tokens, LOAD_PROMETHEUS),
                )
            )
        return Snapshot(taken_at=self.now, window=f"{self.loaded.scenario.period_s:g}s", servers=tuple(servers))

    def _metrics(self, m: Metrics, noise: float) -> Metrics:
        return Metrics(
            arrival_rps=self._noisy(m.arrival_rps, noise),
            completion_rps=self._noisy(m.completion_rps, noise),
            in_tokens=m.in_tokens,
            out_tokens=m.out_tokens,
            ttft_ms=self._noisy(m.ttft_ms, noise),
            itl_ms=self._noisy(m.itl_ms, noise),
            running=self._noisy(m.running, noise),
            waiting=self._noisy(m.waiting, noise),
            kv_cache=None if m.kv_cache is None else min(1.0, self._noisy(m.kv_cache, noise) or 0.0),
        )

    def end_window(self) -> dict[str, Any]:
        """Close the metrics window: one timeline row of it, and fresh sums."""
        row: dict[str, Any] = {"t_s": self.now, "cost": self.cost, "servers": {}}
        for s in self.servers.values():
            served = sum(v.window.served for v in s.variants.values())
            row["servers"][s.name] = {
                "rate_rps": s.window_rate / s.window_s if s.window_s else 0.0,
                "replicas": {v.accelerator: v.holding for v in s.variants.values() if v.holding},
                "ttft_ms": sum(v.window.ttft for v in s.variants.values()) / served if served else None,
                "ttft_slo_ms": s.ttft_slo,
                "backlog": s.backlog,
            }
            s.window_rate = s.window_s = 0.0
            for v in s.variants.values():
                v.window = _Window()
        return row


class SimActuator:
    """Applies actions to the simulated cluster (an :class:`~inferno.actuator.Actuator`)."""

    def __init__(self, cluster: ClosedLoop) -> None:
        self.cluster = cluster

    def apply(self, actions: Sequence[Action]) -> Actuation:
        """Apply scale-ups first; skip an action whose Deployment changed since it was planned."""
        results = []
        for action in sorted(actions, key=lambda a: a.replicas_to <= a.replicas_from):
            v = self.cluster.variant(action.server, action.accelerator)
            if v.replicas != action.replicas_from:
                results.append(ActionResult(action, "skipped", f"spec.replicas is {v.replicas}"))
                continue
            self.cluster.resize(v, action.replicas_to, action.max_num_seqs_to)
            self.cluster.actions += 1
            results.append(ActionResult(action, "applied"))
        return Actuation(tuple(results))


def _action(v: SimVariant, replicas: int, reason: str) -> Action:
    return Action(
        namespace=NAMESPACE,
        deployment=v.deployment,
        server=v.server,
        accelerator=v.accelerator,
        replicas_from=v.replicas,
        replicas_to=replicas,
        reason=reason,
    )


# --- policies -----------------------------------------------------------------------------


class Policy(Protocol):
    """Decides, once per control period, what the simulated cluster should run."""

    def step(self) -> None:
        """Look at the cluster (its snapshot) and change it through the actuator."""
        ...


class _Source:
    """A SnapshotSource reading the simulated cluster."""

    def __init__(self, cluster: ClosedLoop) -> None:
        self.cluster = cluster

    def collect(self) -> Snapshot:
        return self.cluster.snapshot()


class InfernoPolicy:
    """The real Controller: collector = the simulated Prometheus view, actuator = the simulated cluster."""

    def __init__(self, cluster: ClosedLoop, forecast: bool = False) -> None:
        spec = cluster.spec
        sc = cluster.loaded.scenario
        options = OptimizerOptions()
        tuner = EKFTuner(options.queue_model, seeds=seeds_from_spec(spec)) if sc.tune else None
        forecaster = None
        if forecast:
            p = PredictorSettings(enabled=True, method=sc.forecast_method, startup_s=sc.startup_s)
            history = History.from_settings(p, sc.period_s)
            forecaster = Forecaster(make_predictor(p.method, p), history, p.startup_s + sc.period_s)
        self.controller = Controller(
            system=spec,
            collector=_Source(cluster),
            actuator=SimActuator(cluster),
            options=options,
            limits=LimitSettings(),
            telemetry=Telemetry(),
            tuner=tuner,
            forecaster=forecaster,
            clock=lambda: cluster.now,
        )
        self.cycle_ms: list[float] = []

    def step(self) -> None:
        start = time.perf_counter()
        self.controller.cycle()
        self.cycle_ms.append((time.perf_counter() - start) * 1000)


class HpaPolicy:
    """Kubernetes HPA on mean running requests / max-num-seqs (target 0.7, tolerance 10%, 300 s stabilisation)."""

    target = 0.7
    tolerance = 0.1
    window_s = 300.0

    def __init__(self, cluster: ClosedLoop) -> None:
        self.cluster = cluster
        self.actuator = SimActuator(cluster)
        self.history: dict[str, list[tuple[float, int]]] = {}

    def step(self) -> None:
        c = self.cluster
        snap = c.snapshot()
        actions = []
        for server in snap.servers:
            for obs in server.variants:
                v = c.variant(server.name, obs.accelerator)
                if v.replicas == 0:
                    continue
                desired = v.replicas
                running = obs.metrics.running
                if obs.ready_replicas and running is not None:
                    ratio = running / obs.ready_replicas / v.max_batch / self.target
                    if abs(ratio - 1) > self.tolerance:
                        desired = max(1, math.ceil(obs.ready_replicas * ratio))
                history = [(t, n) for t, n in self.history.get(v.deployment, []) if c.now - t < self.window_s]
                history.append((c.now, desired))
                self.history[v.deployment] = history
                if desired < v.replicas:  # scale down only to the highest recommendation of the window
                    desired = min(v.replicas, max(n for _, n in history))
                if desired != v.replicas:
                    actions.append(_action(v, desired, "hpa"))
        self.actuator.apply(actions)


class SaturationPolicy:
    """+1 replica when KV-cache use > 0.8 or waiting > 5 per replica; -1 when one less would run under 50%."""

    def __init__(self, cluster: ClosedLoop) -> None:
        self.cluster = cluster
        self.actuator = SimActuator(cluster)

    def step(self) -> None:
        c = self.cluster
        actions = []
        for server in c.snapshot().servers:
            for obs in server.variants:
                v = c.variant(server.name, obs.accelerator)
                if v.replicas == 0 or not obs.ready_replicas or obs.metrics.running is None:
                    continue
                per_running = obs.metrics.running / obs.ready_replicas
                per_waiting = (obs.metrics.waiting or 0.0) / obs.ready_replicas
                if per_running / v.max_batch > 0.8 or per_waiting > 5:
                    if v.pending == 0 and not v.starting:
                        actions.append(_action(v, v.replicas + 1, "saturated"))
                elif v.replicas > 1 and obs.metrics.running / ((v.replicas - 1) * v.max_batch) < 0.5:
                    actions.append(_action(v, v.replicas - 1, "underused"))
        self.actuator.apply(actions)


def _plan_for(cluster: ClosedLoop, loads: Mapping[str, float], options: OptimizerOptions) -> Snapshot:
    """Resize the cluster to the optimizer's plan for ``loads`` (req/s); the snapshot it planned from."""
    snap = cluster.snapshot(noise=0.0, loads=loads)
    observed = observe_system(cluster.spec, snap)
    allowed = {s.name: {v.accelerator for v in s.variants} for s in snap.servers}
    plan = optimize(observed.spec, options, allowed=allowed)
    SimActuator(cluster).apply(plan_actions(plan, snap))
    return snap


def _peak(traffic: Traffic, start: float, end: float, step: float) -> float:
    grid = np.arange(start, max(end, start + step), step / SAMPLES_PER_TICK)
    return float(np.max(traffic.rate(grid)))


class StaticPeakPolicy:
    """Fixed replicas: the optimizer's (no capacity limit, no tuner) sizing for each server's peak rate."""

    def __init__(self, cluster: ClosedLoop) -> None:
        sc = cluster.loaded.scenario
        peaks = {s.name: _peak(s.traffic, 0.0, sc.duration_s, sc.step_s) for s in cluster.servers.values()}
        saved, cluster.startup_s = cluster.startup_s, 0.0
        _plan_for(cluster, peaks, OptimizerOptions(unlimited=True))
        cluster.startup_s = saved

    def step(self) -> None:
        return None


class OraclePolicy:
    """Every period: the optimizer on the true coming load (max over the next period), instant start-up."""

    def __init__(self, cluster: ClosedLoop) -> None:
        self.cluster = cluster
        cluster.startup_s = 0.0

    def step(self) -> None:
        c = self.cluster
        sc = c.loaded.scenario
        loads = {s.name: _peak(s.traffic, c.now, c.now + sc.period_s, sc.step_s) for s in c.servers.values()}
        _plan_for(c, loads, OptimizerOptions())
        c._schedule()


POLICIES: dict[str, Callable[[ClosedLoop], Policy]] = {
    "inferno": InfernoPolicy,
    "inferno-forecast": lambda cluster: InfernoPolicy(cluster, forecast=True),
    "hpa": HpaPolicy,
    "saturation": SaturationPolicy,
    "static-peak": StaticPeakPolicy,
    "oracle": OraclePolicy,
}
"""Policy name -> its constructor (given the cluster at time 0)."""


def make_policy(name: str, cluster: ClosedLoop) -> Policy:
    """Policy ``name`` on ``cluster``; ConfigError listing the names when unknown."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None
    return factory(cluster)


# --- a run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """What a run gives."""

    policy: str
    scenario: str
    overall: float
    per_class: dict[str, float]
    cost: float
    actions: int
    restarts: int
    duration_s: float
    wall_s: float
    cycle_ms: tuple[float, ...] = ()
    """Wall time of each control cycle of the inferno policy (ms)."""
    timeline: tuple[dict[str, Any], ...] = ()

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        """The JSON of ``inferno simulate --json``."""
        data: dict[str, Any] = {
            "policy": self.policy,
            "scenario": self.scenario,
            "slo_attainment": {"overall": self.overall, "per_class": self.per_class},
            "cost": self.cost,
            "actions": self.actions,
            "restarts": self.restarts,
            "duration_s": self.duration_s,
            "wall_s": self.wall_s,
        }
        if self.cycle_ms:
            data["cycle_ms"] = {
                "mean": float(np.mean(self.cycle_ms)),
                "p95": float(np.percentile(self.cycle_ms, 95)),
                "max": max(self.cycle_ms),
            }
        if timeline:
            data["timeline"] = list(self.timeline)
        return data


def _initial(cluster: ClosedLoop) -> None:
    """The start state: the scenario's initial allocations, the optimizer's at time 0 for the others."""
    sc = cluster.loaded.scenario
    sized = [name for name, s in sc.servers.items() if s.initial is None]
    if sized:
        saved, cluster.startup_s = cluster.startup_s, 0.0
        loads = {name: float(cluster.servers[name].traffic.rate(0.0)) for name in cluster.servers}
        _plan_for(cluster, loads, OptimizerOptions())
        cluster.startup_s = saved
        for name, s in cluster.servers.items():
            if name not in sized:
                for v in s.variants.values():
                    cluster.set_ready(name, v.accelerator, 0, None)
    for name, given in sc.servers.items():
        if given.initial is not None:
            start = given.initial
            cluster.set_ready(name, start.accelerator, start.replicas, start.max_batch)
    cluster._schedule()
    cluster.actions = cluster.restarts = 0


def simulate_scenario(loaded: LoadedScenario, policy: str, clock: Callable[[], float] = time.perf_counter) -> Result:
    """Run ``policy`` over ``loaded``: the control loop every period, the data plane every step."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; choose one of: {', '.join(POLICIES)}")
    start = clock()
    sc = loaded.scenario
    cluster = ClosedLoop(loaded)
    _initial(cluster)
    runner = make_policy(policy, cluster)
    cluster.actions = cluster.restarts = 0
    timeline = []
    while cluster.now < sc.duration_s - 1e-9:
        cluster.advance(min(sc.duration_s, cluster.now + sc.period_s), sc.step_s)
        if cluster.now < sc.duration_s - 1e-9:
            runner.step()
        timeline.append(cluster.end_window())
    arrived = sum(s.arrived for s in cluster.servers.values())
    met = sum(s.met for s in cluster.servers.values())
    return Result(
        policy=policy,
        scenario=loaded.name,
        overall=met / arrived if arrived > 0 else 1.0,
        per_class={k: (m / a if a > 0 else 1.0) for k, (m, a) in sorted(cluster.per_class.items())},
        cost=cluster.cost,
        actions=cluster.actions,
        restarts=cluster.restarts,
        duration_s=sc.duration_s,
        wall_s=clock() - start,
        cycle_ms=tuple(runner.cycle_ms) if isinstance(runner, InfernoPolicy) else (),
        timeline=tuple(timeline),
    )


def plot_result(result: Result, path: Path) -> None:
    """Load, replicas by accelerator, mean TTFT / SLO and cost over time, as a PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plot needs matplotlib: pip install matplotlib") from exc
    rows = result.timeline
    hours = [r["t_s"] / 3600 for r in rows]
    names = sorted({n for r in rows for n in r["servers"]})
    accs = sorted({a for r in rows for s in r["servers"].values() for a in s["replicas"]})
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    for name in names:
        axes[0].plot(hours, [r["servers"][name]["rate_rps"] for r in rows], label=name)
    axes[0].set_ylabel("load (req/s)")
    axes[0].legend(fontsize=6, ncol=3)
    for acc in accs:
        axes[1].plot(hours, [sum(s["replicas"].get(acc, 0) for s in r["servers"].values()) for r in rows], label=acc)
    axes[1].set_ylabel("replicas")
    axes[1].legend(fontsize=7)
    for name in names:
        ratios = [_ratio(r["servers"][name]) for r in rows]
        axes[2].plot(hours, ratios, label=name)
    axes[2].axhline(1.0, color="k", linestyle="--", linewidth=0.8)
    axes[2].set_ylabel("mean TTFT / SLO")
    axes[2].set_yscale("log")
    axes[3].plot(hours, [r["cost"] for r in rows])
    axes[3].set_ylabel("cost (cumulative)")
    axes[3].set_xlabel("hours")
    fig.suptitle(f"{result.scenario}: {result.policy} (attainment {result.overall:.3f}, cost {result.cost:.0f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ratio(row: Mapping[str, Any]) -> float:
    ttft, slo = row["ttft_ms"], row["ttft_slo_ms"]
    return float(ttft / slo) if ttft is not None and slo else math.nan
