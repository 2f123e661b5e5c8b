"""The control loop: collect -> tune -> optimize -> limits -> actuate, once per period.

A cycle computes first and acts last: only the actuator writes, so a cycle that fails before it
changes nothing in the cluster. Every cycle gives one :class:`CycleRecord` (logged as one line, kept in
the optional JSONL decision log, exported as metrics).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TextIO

from apscheduler.schedulers.background import BackgroundScheduler

from inferno.actuator import Actuator, ApplyError, plan_actions
from inferno.collector import observe_system
from inferno.config import LimitSettings
from inferno.errors import CollectError, InfernoError
from inferno.interfaces import SnapshotSource
from inferno.limits import Adjustment, LimitsMemory, apply_limits
from inferno.logs import bind_cycle, get_logger, unbind_cycle
from inferno.optimizer import OptimizerOptions, optimize
from inferno.predictor import Forecaster, forecast_report
from inferno.spec import SystemSpec
from inferno.state import Action, ActionResult, Plan, Snapshot
from inferno.telemetry import Telemetry
from inferno.tuner import Observation, Tuner, TunerStore, merge_estimates, observations_from_snapshot

log = get_logger(__name__)

TUNER_OFF = "off: online tuning is disabled; configured parameters are used"


@dataclass(frozen=True)
class CycleRecord:
    """What one cycle saw, decided and did."""

    cycle_id: str
    started_at: float
    outcome: str
    """ok (all actions applied or planned), idle (nothing to do), skipped (no data: transient), failed,
    standby (another replica leads)."""
    reason: str = ""
    stage_ms: dict[str, float] = field(default_factory=dict)
    servers: int = 0
    flagged: dict[str, tuple[str, ...]] = field(default_factory=dict)
    plan: Plan | None = None
    actions: tuple[Action, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()
    results: tuple[ActionResult, ...] = ()
    tuner: Any = TUNER_OFF
    """The tuner's report of this cycle (configured vs tuned parameters, NIS of each update)."""
    sequence: int = 0
    """Number of the cycle since the daemon started (the ``cycle`` of its observations)."""
    observations: tuple[Observation, ...] = ()
    """The per-replica observations given to the tuner, replayable with ``inferno tune``."""
    forecasts: dict[str, Any] = field(default_factory=dict)
    """Per server: observed rate, forecast and the upper bound the optimizer sized for."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (one line of the decision log)."""
        return {
            "cycle_id": self.cycle_id,
            "started_at": datetime.fromtimestamp(self.started_at, UTC).isoformat(),
            "outcome": self.outcome,
            "reason": self.reason,
            "stage_ms": {k: round(v, 2) for k, v in self.stage_ms.items()},
            "servers": self.servers,
            "flagged": {k: list(v) for k, v in self.flagged.items()},
            "plan": self.plan.to_dict() if self.plan else None,
            "actions": [a.describe() + (f" ({a.reason})" if a.reason else "") for a in self.actions],
            "adjustments": [
                {"deployment": f"{a.namespace}/{a.deployment}", "server": a.server, "rule": a.rule, "detail": a.detail}
                for a in self.adjustments
            ],
            "results": [
                {"action": r.action.describe(), "outcome": r.outcome, "detail": r.detail} for r in self.results
            ],
            "tuner": self.tuner,
            "forecasts": self.forecasts,
            "cycle": self.sequence,
            "observations": [{"cycle": self.sequence, **o.to_dict()} for o in self.observations],
        }


class Controller:
    """Runs cycles; holds what must survive between them (limits memory)."""

    def __init__(
        self,
        *,
        system: SystemSpec,
        collector: SnapshotSource,
        actuator: Actuator,
        options: OptimizerOptions,
        limits: LimitSettings,
        telemetry: Telemetry,
        gpu_products: dict[str, str] | None = None,
        decision_log: TextIO | None = None,
        leader: Callable[[], bool] | None = None,
        tuner: Tuner | None = None,
        tuner_store: TunerStore | None = None,
        clock: Callable[[], float] = time.time,
        memory: LimitsMemory | None = None,
        forecaster: Forecaster | None = None,
        forecaster_store: TunerStore | None = None,
    ) -> None:
        self.system = system
        self.collector = collector
        self.actuator = actuator
        self.options = options
        self.limits = limits
        self.telemetry = telemetry
        self.gpu_products = gpu_products or {}
        self.decision_log = decision_log
        self.leader = leader
        self.tuner = tuner
        self.tuner_store = tuner_store
        self.clock = clock
        self.memory = LimitsMemory() if memory is None else memory
        """What the limits remember between cycles; pass one in to share it across Controllers of one system."""
        self.last: CycleRecord | None = None
        self.sequence = 0
        self.forecaster = forecaster
        """Forecasts each server's rate; the optimizer sizes for the upper bound (None: the observed rate)."""
        self.forecaster_store = forecaster_store

    def cycle(self) -> CycleRecord:
        """Run one cycle; never raises for a failed cycle (the record says what happened)."""
        cycle_id = uuid.uuid4().hex[:12]
        self.sequence += 1
        bind_cycle(cycle_id)
        try:
            record = self._cycle(cycle_id)
        except Exception as exc:  # a bug must not kill the daemon: the cycle failed, nothing was written
            log.exception("cycle_crashed")
            record = CycleRecord(cycle_id, self.clock(), "failed", f"internal error: {exc!r}")
        finally:
            unbind_cycle()
        record = replace(record, sequence=self.sequence)
        self._report(record)
        self.last = record
        return record

    def _cycle(self, cycle_id: str) -> CycleRecord:
        started = self.clock()
        leading = self.leader is None or self.leader()
        self.telemetry.leader.set(1 if leading else 0)
        if not leading:
            return CycleRecord(cycle_id, started, "standby", "another replica holds the leader Lease")
        stage_ms: dict[str, float] = {}
        timer = partial(self._stage, stage_ms=stage_ms)
        try:
            with timer("collect"):
                snapshot = self.collector.collect()
                observed = observe_system(self.system, snapshot, self.gpu_products)
        except CollectError as exc:
            return CycleRecord(cycle_id, started, "skipped", f"collect: {exc}", stage_ms)
        with timer("tune"):
            spec, tuned, observations = self._tune(snapshot, observed.spec)
        with timer("forecast"):
            spec, forecasts = self._forecast(snapshot, spec, observed.flagged)
        try:
            with timer("optimize"):
                variants = {s.name: {v.accelerator for v in s.variants} for s in snapshot.servers}
                plan = optimize(spec, self.options, allowed=variants)
        except InfernoError as exc:
            return CycleRecord(
                cycle_id, started, "failed", f"optimize: {exc}", stage_ms, len(snapshot.servers), observed.flagged
            )
        with timer("limits"):
            wished = plan_actions(plan, snapshot)
            actions, adjustments = apply_limits(
                wished, snapshot, plan, observed.spec, self.memory, self.limits, self.clock()
            )
        base = CycleRecord(
            cycle_id,
            started,
            "ok",
            "",
            stage_ms,
            len(snapshot.servers),
            observed.flagged,
            plan,
            actions,
            adjustments,
            tuner=tuned,
            observations=observations,
            forecasts=forecasts,
        )
        self._export(plan, snapshot, observed.spec)
        if not actions:
            return replace(base, outcome="idle", reason="the cluster already matches the plan")
        try:
            with timer("actuate"):
                actuation = self.actuator.apply(actions)
        except ApplyError as exc:
            return replace(base, outcome="failed", reason=f"actuate: {exc}", results=exc.actuation.results)
        except InfernoError as exc:
            return replace(base, outcome="failed", reason=f"actuate: {exc}")
        return replace(base, results=actuation.results)

    @contextmanager
    def _stage(self, stage: str, stage_ms: dict[str, float]) -> Iterator[None]:
        """Time a stage into ``stage_ms`` and the stage histogram (also when it fails)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            stage_ms[stage] = seconds * 1000
            self.telemetry.stage_seconds.labels(stage).observe(seconds)

    def _forecast(
        self, snapshot: Snapshot, spec: SystemSpec, flagged: Mapping[str, Any]
    ) -> tuple[SystemSpec, dict[str, Any]]:
        """Record each complete server's rate and size it for the upper bound of its forecast."""
        if self.forecaster is None:
            return spec, {}
        observed = {
            s.name: s.load.arrival_rpm / 60
            for s in snapshot.servers
            if s.complete and s.load is not None and s.name not in flagged
        }
        forecasts = self.forecaster.update(snapshot.taken_at, observed)
        if self.forecaster_store is not None:
            self.forecaster_store.save(self.forecaster.state())
        for server, f in forecasts.items():
            self.telemetry.forecast_rps.labels(server, "forecast").set(f.value)
            self.telemetry.forecast_rps.labels(server, "upper").set(f.upper)
        sized = _with_rates(spec, {server: f.upper for server, f in forecasts.items()})
        return sized, forecast_report(observed, forecasts)

    def _tune(self, snapshot: Snapshot, spec: SystemSpec) -> tuple[SystemSpec, Any, tuple[Observation, ...]]:
        """Feed the tuner this cycle's per-replica observations; the spec with the tuned parameters.

        A tuner failure never blocks the cycle: the configured parameters are used and the record says why.
        """
        if self.tuner is None:
            return spec, TUNER_OFF, ()
        observations: tuple[Observation, ...] = ()
        try:
            observations = tuple(observations_from_snapshot(snapshot, spec))
            report = self.tuner.update(observations)
            merged = merge_estimates(spec, self.tuner.estimates(), self.options.queue_model)
            if self.tuner_store is not None:
                self.tuner_store.save(self.tuner.state())
        except InfernoError as exc:
            log.warning("tuner_failed", reason=str(exc))
            return spec, f"failed, configured parameters used: {exc}", observations
        for key, params in self.tuner.estimates().items():
            for name, value in params.items():
                self.telemetry.tuner_parameter.labels(key[0], key[1], name).set(value)
        for key_report in report.keys:
            for outcome in key_report.outcomes:
                self.telemetry.tuner_updates.labels(key_report.model, key_report.accelerator, outcome.status).inc()
        return merged, report.to_dict(), observations

    def _export(self, plan: Plan, snapshot: Snapshot, spec: SystemSpec) -> None:
        t = self.telemetry
        targets = _slo_targets(spec)
        t.total_cost.set(plan.total_cost)
        used = plan.cards_used()
        for acc_type, available in plan.capacity.items():
            t.cards.labels(acc_type, "available").set(available)
            t.cards.labels(acc_type, "used").set(used.get(acc_type, 0))
        for server in snapshot.servers:
            alloc = plan.allocations.get(server.name)
            wanted = {v.accelerator: v for v in alloc.variants} if alloc else {}
            if alloc is not None:
                t.unmet_demand.labels(server.name).set(alloc.unmet_rps)
            for v in server.variants:
                labels = (v.namespace, v.deployment, server.name, v.accelerator)
                t.current_replicas.labels(*labels).set(v.replicas)
                if v.max_num_seqs is not None:
                    t.current_max_num_seqs.labels(*labels).set(v.max_num_seqs)
                target = wanted.get(v.accelerator)
                t.desired_replicas.labels(*labels).set(target.replicas if target else 0)
                if target is not None and target.max_batch:
                    t.desired_max_num_seqs.labels(*labels).set(target.max_batch)
                    t.predicted_latency.labels(server.name, "ttft").set(target.ttft_ms)
                    t.predicted_latency.labels(server.name, "itl").set(target.itl_ms)
            for metric, value in (("ttft", server.metrics.ttft_ms), ("itl", server.metrics.itl_ms)):
                if value is not None:
                    t.observed_latency.labels(server.name, metric).set(value)
            for metric, target_ms in targets.get(server.name, {}).items():
                t.slo_target.labels(server.name, metric).set(target_ms)

    def _report(self, record: CycleRecord) -> None:
        self.telemetry.cycles.labels(record.outcome).inc()
        if record.outcome in ("ok", "idle", "standby"):
            self.telemetry.last_success.set(record.started_at)
        for r in record.results:
            kind = "max_num_seqs" if r.action.changes_max_num_seqs else "replicas"
            self.telemetry.actions.labels(kind, r.outcome).inc()
        log.info(
            "cycle",
            cycle_id=record.cycle_id,
            outcome=record.outcome,
            reason=record.reason,
            stage_ms={k: round(v, 1) for k, v in record.stage_ms.items()},
            servers=record.servers,
            flagged=len(record.flagged),
            actions=len(record.actions),
            adjustments=len(record.adjustments),
            cost=record.plan.total_cost if record.plan else None,
        )
        if self.decision_log is not None:
            self.decision_log.write(json.dumps(record.to_dict()) + "\n")
            self.decision_log.flush()


def _slo_targets(spec: SystemSpec) -> dict[str, dict[str, float]]:
    """Server -> {'ttft': ms, 'itl': ms}: the mean-latency SLOs of its class for its model (unset ones left out)."""
    classes = {c.name: c for c in spec.service_class_data.service_classes}
    found: dict[str, dict[str, float]] = {}
    for server in spec.server_data.servers:
        service_class = classes.get(server.class_name)
        targets = service_class.model_targets if service_class else ()
        target = next((t for t in targets if t.model == server.model), None)
        if target is not None:
            found[server.name] = {k: v for k, v in (("ttft", target.slo_ttft), ("itl", target.slo_itl)) if v > 0}
    return found


def serve(controller: Controller, period_s: float, *, once: bool = False) -> CycleRecord | None:
    """Run one cycle (``once``), or a cycle every ``period_s`` until SIGTERM/SIGINT.

    Cycles never overlap; after a stall, missed runs coalesce into one. On a signal the current cycle
    finishes, then the loop exits.
    """
    if once:
        return controller.cycle()
    stop = threading.Event()
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        controller.cycle,
        "interval",
        seconds=period_s,
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
        id="cycle",
    )
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    scheduler.start()
    log.info("started", period_s=period_s)
    try:
        while not stop.wait(0.5):  # short waits let the main thread run signal handlers promptly
            pass
    finally:
        scheduler.shutdown(wait=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("stopped")
    return controller.last


def _with_rates(spec: SystemSpec, rates_rps: Mapping[str, float]) -> SystemSpec:
    """``spec`` with the current load of each server in ``rates_rps`` set to that rate (req/s)."""
    if not rates_rps:
        return spec
    servers = tuple(
        s.model_copy(
            update={
                "current_alloc": s.current_alloc.model_copy(
                    update={"load": s.current_alloc.load.model_copy(update={"arrival_rate": 60 * rates_rps[s.name]})}
                )
            }
        )
        if s.name in rates_rps
        else s
        for s in spec.server_data.servers
    )
    return spec.model_copy(update={"server_data": spec.server_data.model_copy(update={"servers": servers})})
