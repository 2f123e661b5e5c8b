"""The runtime controller: reconciles Optimizer resources (``inferno.ai/v1alpha1``, see :mod:`inferno.crd`).

``inferno run --mode reconcile`` lists the Optimizers and watches them from the list's resourceVersion;
every ``INFERNO_PERIOD`` seconds (the resync) it lists them again. An Optimizer is *due* when its spec
changed (``metadata.generation`` is not ``status.observedGeneration``), when its input changed (the
referenced ConfigMap: ``status.inputDigest``), when its ``period`` has elapsed since ``status.lastRunTime``,
or when its last run failed and the back-off is over. A due Optimizer runs one cycle of the daemon's own
:class:`~inferno.controller.Controller` (collect -> tune -> optimize -> limits -> actuate) with its system,
settings and scope; ``advise`` mode plugs in an actuator that applies nothing. The result goes into the
status subresource (conditions, allocations, cost) and an Event.

Each Optimizer keeps its own limits memory (and tuner, when asked), and runs alone: one that is invalid
or fails does not stop the others. A deleted Optimizer is forgotten; nothing of it is left to clean up.
With leader election only the holder of the Lease reconciles (the Lease is renewed at every resync).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TextIO, cast

import yaml
from pydantic import ValidationError

from inferno import crd
from inferno.actuator import EVENT_MESSAGE_MAX, Actuator, KubeActuator
from inferno.collector import Collector
from inferno.config import Settings
from inferno.controller import Controller, CycleRecord
from inferno.crd import OptimizerResourceSpec, OptimizerStatus, ServerAllocation, VariantStatus
from inferno.errors import ConfigError, Problem
from inferno.k8s import DeploymentApi, KubeError
from inferno.limits import LimitsMemory
from inferno.logs import get_logger
from inferno.optimizer import OptimizerOptions
from inferno.prometheus import MetricsApi
from inferno.spec import SystemConfig, SystemDocument, SystemSpec
from inferno.state import Action, ActionResult, Actuation, Plan
from inferno.system import FLAT_KEYS, LIST_KEYS, REFERENCE_FILES, LoadedSystem, Where, check_system, validation_problems
from inferno.telemetry import Telemetry
from inferno.tuner import EKFTuner, Tuner, seeds_from_spec

__all__ = ["ACTUATORS", "AdviseActuator", "OptimizerApi", "Reconciler", "Reconciliation", "serve"]

log = get_logger(__name__)

MAX_STATUS_ACTIONS = 100
"""Most actions listed in a status (the rest are counted)."""
RETRY_MIN_S = 5.0
"""First back-off after a failed run; it doubles per failure, up to the resync period."""

Outcome = Literal["ok", "idle", "skipped", "failed", "invalid", "crashed", "not-due"]


class OptimizerApi(DeploymentApi, Protocol):
    """The cluster calls the reconciler makes: those of the collector and actuator, and these."""

    def list_optimizers(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
        """The Optimizers of ``namespace`` (None: all), and the list's resourceVersion."""
        ...

    def watch_optimizers(self, namespace: str | None, resource_version: str, timeout_s: float) -> WatchEvents:
        """A watch of the Optimizers of ``namespace`` after ``resource_version``."""
        ...

    def patch_optimizer_status(self, namespace: str, name: str, ops: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Apply a JSON patch to an Optimizer's status subresource."""
        ...

    def read_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap, or None when there is none."""
        ...


class WatchEvents(Protocol):
    """A stream of watch events that another thread can end."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The events, ``{"type": ..., "object": {...}}``."""
        ...

    def close(self) -> None:
        """End the stream."""
        ...


# --- modes: the actuator each one plugs into the cycle ---------------------------------------------


class AdviseActuator:
    """Applies nothing: every action is only planned (advise mode writes the plan into the status)."""

    def apply(self, actions: Sequence[Action]) -> Actuation:
        """Every action 'planned'."""
        return Actuation(tuple(ActionResult(a, "planned") for a in actions), dry_run=True)


ACTUATORS: dict[str, Callable[[DeploymentApi, Settings, Callable[[], float]], Actuator]] = {
    "advise": lambda kube, settings, clock: AdviseActuator(),
    "apply": lambda kube, settings, clock: KubeActuator(kube, clock, settings.vllm_container),
}
"""Optimizer ``spec.mode`` -> the actuator of its cycles."""


# --- what is remembered per Optimizer -------------------------------------------------------------


@dataclass
class _Tracked:
    """What the reconciler keeps of one Optimizer between runs (lost on restart; the status is not)."""

    uid: str
    memory: LimitsMemory = field(default_factory=LimitsMemory)
    tuner: Tuner | None = None
    tuner_generation: int | None = None
    done: tuple[int, str] | None = None
    """(generation, input digest) of the last completed run."""
    last_run: float | None = None
    period_s: float | None = None
    failures: int = 0
    """Failed runs in a row."""
    failed_generation: int | None = None
    retry_at: float | None = None
    """No retry of the failed generation before this time."""

    def next_due(self) -> float | None:
        """When this Optimizer is due again without any change (None: only on a change)."""
        times = [t for t in (self.retry_at, _after(self.last_run, self.period_s)) if t is not None]
        return min(times) if times else None


def _after(start: float | None, period: float | None) -> float | None:
    return None if start is None or period is None else start + period


@dataclass(frozen=True)
class Reconciliation:
    """What one look at one Optimizer did."""

    namespace: str
    name: str
    outcome: Outcome
    why: str = ""
    """Why it ran (spec changed, input changed, period elapsed, retry), or why it did not."""
    detail: str = ""
    status: dict[str, Any] | None = None
    """The status written (None when nothing was written)."""
    record: CycleRecord | None = None

    @property
    def ran(self) -> bool:
        """True when a cycle (or the validation that stopped it) ran."""
        return self.outcome != "not-due"


@dataclass(frozen=True)
class _Inputs:
    """An Optimizer's raw spec, the text of its referenced system, and a digest of both."""

    spec: Any
    system_text: str | None
    system_source: str
    digest: str


# --- the reconciler -------------------------------------------------------------------------------


class Reconciler:
    """Reconciles the Optimizers of the managed namespaces (all of them when ``settings.namespaces`` is empty)."""

    def __init__(
        self,
        kube: OptimizerApi,
        settings: Settings,
        *,
        prometheus: MetricsApi | None,
        telemetry: Telemetry,
        leader: Callable[[], bool] | None = None,
        decision_log: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.prometheus = prometheus
        self.telemetry = telemetry
        self.leader = leader
        self.decision_log = decision_log
        self.clock = clock
        self.resync_s = settings.period
        self.ready = False
        """True once a list of the Optimizers has been reconciled, or another replica leads (readiness)."""
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._lock = threading.RLock()
        self._streams: set[WatchEvents] = set()
        self._streams_lock = threading.Lock()

    # --- one Optimizer ------------------------------------------------------------------------

    def reconcile(self, obj: Mapping[str, Any]) -> Reconciliation:
        """Run the Optimizer ``obj`` when it is due and write its status; never raises."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        with self._lock:
            try:
                return self._reconcile(obj, namespace, name)
            except Exception as exc:  # one Optimizer's bug must not stop the others
                log.exception("reconcile_crashed", optimizer=f"{namespace}/{name}")
                tracked = self._tracked.get((namespace, name))
                if tracked is not None:
                    self._failed(tracked, self.clock(), int(meta.get("generation") or 0))
                return Reconciliation(namespace, name, "crashed", detail=f"internal error: {exc!r}")

    def forget(self, namespace: str, name: str) -> None:
        """Stop tracking a deleted Optimizer (it owns nothing to clean up)."""
        with self._lock:
            if self._tracked.pop((namespace, name), None) is not None:
                log.info("optimizer_forgotten", optimizer=f"{namespace}/{name}")

    def tracked(self) -> list[tuple[str, str]]:
        """(namespace, name) of every Optimizer being tracked."""
        with self._lock:
            return sorted(self._tracked)

    def _reconcile(self, obj: Mapping[str, Any], namespace: str, name: str) -> Reconciliation:
        meta = obj.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        tracked = self._track(namespace, name, str(meta.get("uid") or ""))
        status = dict(obj.get("status") or {})
        now = self.clock()
        where = f"Optimizer {namespace}/{name}"
        if tracked.retry_at is not None and now < tracked.retry_at and tracked.failed_generation == generation:
            return Reconciliation(namespace, name, "not-due", "backing off after a failed run")
        try:
            inputs = self._inputs(obj, namespace)
        except KubeError as exc:  # the referenced ConfigMap could not be read: try again later
            self._failed(tracked, now, generation)
            conditions = _failure_conditions("ReadFailed", str(exc), generation, status, now)
            new = {**status, "conditions": conditions, "lastRunTime": _rfc3339(now), "outcome": "skipped"}
            written = self._write(obj, new, now)
            return Reconciliation(namespace, name, "skipped", "read the system", str(exc), written)
        tracked.period_s = _raw_period(inputs.spec)
        if tracked.last_run is None:  # e.g. after a restart: the status remembers
            tracked.last_run = _parse_time(status.get("lastRunTime"))
        why = self._due(tracked, status, generation, inputs.digest, now)
        if not why:
            return Reconciliation(namespace, name, "not-due")
        tracked.last_run = now
        try:
            resource, spec = self._validate(inputs, where)
        except ConfigError as exc:
            return self._invalid(obj, tracked, status, generation, inputs.digest, exc, why, now)
        record = self._cycle(resource, spec, tracked, namespace, generation)
        complete = _complete(record)
        if complete:
            tracked.done, tracked.failures, tracked.retry_at = (generation, inputs.digest), 0, None
        else:
            self._failed(tracked, now, generation)
        new = _status(record, resource, self.settings.dry_run, generation, status, now)
        if complete:
            new |= {"observedGeneration": generation, "inputDigest": inputs.digest}
        written = self._write(obj, new, now, record)
        log.info(
            "reconciled",
            optimizer=f"{namespace}/{name}",
            why=why,
            mode=resource.mode,
            outcome=record.outcome,
            reason=record.reason,
            cycle_id=record.cycle_id,
            cost=record.plan.total_cost if record.plan else None,
        )
        return Reconciliation(namespace, name, cast(Outcome, record.outcome), why, record.reason, written, record)

    def _track(self, namespace: str, name: str, uid: str) -> _Tracked:
        """The memory of an Optimizer; a new one when it was deleted and created again (a new uid)."""
        tracked = self._tracked.get((namespace, name))
        if tracked is None or (uid and tracked.uid and tracked.uid != uid):
            tracked = self._tracked[(namespace, name)] = _Tracked(uid)
        return tracked

    def _failed(self, tracked: _Tracked, now: float, generation: int) -> None:
        """Back off after a failed run of ``generation``: 5 s, 10 s, 20 s ... up to the resync period."""
        tracked.failures = tracked.failures + 1 if tracked.failed_generation == generation else 1
        tracked.failed_generation = generation
        tracked.retry_at = now + min(self.resync_s, RETRY_MIN_S * 2 ** (tracked.failures - 1))

    def _due(self, tracked: _Tracked, status: Mapping[str, Any], generation: int, digest: str, now: float) -> str:
        """Why the Optimizer should run now ('' when it should not); a back-off is checked before."""
        observed = status.get("observedGeneration")
        if tracked.retry_at is not None:  # the last run failed, and its back-off is over or the spec changed
            if tracked.failed_generation == generation:
                return f"retry after {tracked.failures} failed run(s)"
            return f"spec changed (generation {generation})"
        done = tracked.done == (generation, digest) or (observed == generation and status.get("inputDigest") == digest)
        if not done:
            if observed is None and tracked.done is None:
                return "new"
            if generation not in (observed, tracked.done[0] if tracked.done else None):
                return f"spec changed (generation {generation})"
            return "input changed"
        if status.get("outcome") == "invalid":
            return ""  # the same input is as invalid as before
        last = tracked.last_run
        if tracked.period_s is not None and (last is None or now - last >= tracked.period_s):
            return "period elapsed"
        return ""

    def _inputs(self, obj: Mapping[str, Any], namespace: str) -> _Inputs:
        """The raw spec and the text of the ConfigMap it refers to (KubeError when that cannot be read)."""
        raw = obj.get("spec")
        text, source = None, ""
        ref = _get(raw, "systemRef")
        config_map, key = _get(ref, "configMap"), _get(ref, "key") or "system.yaml"
        if isinstance(config_map, str) and config_map and isinstance(key, str):
            source = f"ConfigMap {namespace}/{config_map} (key {key})"
            found = self.kube.read_config_map(namespace, config_map)
            text = None if found is None else (found.get("data") or {}).get(key)
        blob = json.dumps({"spec": raw, "system": text, "source": source}, sort_keys=True, separators=(",", ":"))
        return _Inputs(raw, text, source, hashlib.sha256(blob.encode()).hexdigest())

    def _validate(self, inputs: _Inputs, where: str) -> tuple[OptimizerResourceSpec, SystemSpec]:
        """The resource spec and its system, checked; ConfigError naming the field path of each problem."""
        try:
            resource = OptimizerResourceSpec.model_validate(inputs.spec if inputs.spec is not None else {})
        except ValidationError as exc:
            raise ConfigError(_problems(exc, Where(where, "spec"))) from exc
        if resource.system is not None:
            spec = resource.system.to_system()
            sources = {s: Where(where, f"spec.system.{FLAT_KEYS[s]}") for s in REFERENCE_FILES}
        else:
            spec, sources = self._referenced_system(inputs, resource)
        problems = check_system(LoadedSystem(spec, sources))
        managed = self.settings.namespaces
        for i, ns in enumerate(resource.servers.namespaces):
            if managed and ns not in managed:
                message = f"{ns!r} is not a namespace inferno manages (INFERNO_NAMESPACES: {', '.join(managed)})"
                problems.append(Problem(where, f"spec.servers.namespaces[{i}]", message))
        if problems:
            raise ConfigError(problems)
        return resource, spec

    def _referenced_system(
        self, inputs: _Inputs, resource: OptimizerResourceSpec
    ) -> tuple[SystemSpec, dict[str, Where]]:
        """The system in the referenced ConfigMap key (inferno's flat document or a system-data.json)."""
        assert resource.system_ref is not None
        file = inputs.system_source
        if inputs.system_text is None:
            raise ConfigError(
                [Problem(file, "", "not found (spec.systemRef names a ConfigMap or key that is missing)")]
            )
        try:
            data = yaml.safe_load(inputs.system_text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            location = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            raise ConfigError([Problem(file, location, f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from exc
        if not isinstance(data, dict):
            raise ConfigError([Problem(file, "", "expected a mapping of system sections at the top level")])
        try:
            if any(isinstance(k, str) and k.lower() == "system" for k in data):
                spec = SystemDocument.model_validate(data).system
                return spec, {s: Where(file, f"system.{s}.{LIST_KEYS[s]}") for s in REFERENCE_FILES}
            spec = SystemConfig.model_validate(data).to_system()
            return spec, {s: Where(file, FLAT_KEYS[s]) for s in REFERENCE_FILES}
        except ValidationError as exc:
            raise ConfigError(_problems(exc, Where(file))) from exc

    def _cycle(
        self, resource: OptimizerResourceSpec, spec: SystemSpec, tracked: _Tracked, namespace: str, generation: int
    ) -> CycleRecord:
        """One cycle of the daemon's controller over this Optimizer's system, scope and settings."""
        settings, chosen = self.settings, resource.settings
        scope = resource.servers
        selector = ",".join(s for s in (settings.label_selector, scope.label_selector) if s)
        scoped = settings.model_copy(
            update={"namespaces": scope.namespaces or (namespace,), "label_selector": selector}
        )
        options = OptimizerOptions(
            solver=chosen.solver or settings.solver,
            queue_model=chosen.queue_model or settings.queue_model,
            batch_policy=chosen.batch_policy or settings.batch_policy,
            heterogeneous=settings.heterogeneous if chosen.heterogeneous is None else chosen.heterogeneous,
            unlimited=chosen.unlimited,
            saturation_policy=chosen.saturation_policy,
            delayed_best_effort=chosen.delayed_best_effort,
            time_limit_s=chosen.time_limit_seconds or settings.milp_time_limit,
            rel_gap=settings.milp_gap,
        )
        mode = "advise" if settings.dry_run else resource.mode  # --dry-run: no Optimizer writes
        if not chosen.tune:
            tracked.tuner = None
        elif tracked.tuner is None or tracked.tuner_generation != generation:
            tracked.tuner = EKFTuner(options.queue_model, seeds=seeds_from_spec(spec, options.queue_model))
            tracked.tuner_generation = generation
        controller = Controller(
            system=spec,
            collector=Collector(self.kube, self.prometheus, scoped, clock=self.clock),
            actuator=ACTUATORS[mode](self.kube, settings, self.clock),
            options=options,
            limits=settings.limits,
            telemetry=self.telemetry,
            gpu_products=settings.gpu_products,
            decision_log=self.decision_log,
            tuner=tracked.tuner,
            clock=self.clock,
            memory=tracked.memory,
        )
        changed_at = dict(tracked.memory.seqs_changed_at)
        record = controller.cycle()
        if mode == "advise":  # nothing was restarted, so no --max-num-seqs cooldown starts
            tracked.memory.seqs_changed_at = changed_at
        return record

    def _invalid(
        self,
        obj: Mapping[str, Any],
        tracked: _Tracked,
        status: dict[str, Any],
        generation: int,
        digest: str,
        exc: ConfigError,
        why: str,
        now: float,
    ) -> Reconciliation:
        """Report an invalid spec: Degraded with every problem and its field path; nothing runs or changes."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        tracked.done, tracked.failures, tracked.retry_at = (generation, digest), 0, None
        message = "; ".join(str(p) for p in exc.problems)
        conditions = _failure_conditions("InvalidSpec", message, generation, status, now)
        new = {
            "observedGeneration": generation,
            "conditions": conditions,
            "lastRunTime": _rfc3339(now),
            "outcome": "invalid",
            "inputDigest": digest,
        }
        written = self._write(obj, new, now)
        log.warning("optimizer_invalid", optimizer=f"{namespace}/{name}", problems=[str(p) for p in exc.problems])
        return Reconciliation(namespace, name, "invalid", why, message, written)

    def _write(
        self, obj: Mapping[str, Any], status: dict[str, Any], now: float, record: CycleRecord | None = None
    ) -> dict[str, Any] | None:
        """Replace the status (through the status subresource) and record an Event when it says something new."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        dumped = OptimizerStatus.model_validate(status).model_dump(mode="json", by_alias=True, exclude_none=True)
        checked = {k: v for k, v in dumped.items() if v not in ("", [])}  # what is unknown is left out
        try:
            self.kube.patch_optimizer_status(namespace, name, [{"op": "add", "path": "/status", "value": checked}])
        except KubeError as exc:
            if exc.status == 404:
                self.forget(namespace, name)
            else:
                log.warning("status_not_written", optimizer=f"{namespace}/{name}", error=str(exc))
                tracked = self._tracked.get((namespace, name))
                if tracked is not None:
                    tracked.done = None
                    self._failed(tracked, now, int(meta.get("generation") or 0))
            return None
        event = _event_for(obj, obj.get("status") or {}, checked, record, now)
        if event is not None:
            try:
                self.kube.create_event(namespace, event)
            except KubeError as exc:
                log.warning("event_not_recorded", optimizer=f"{namespace}/{name}", error=str(exc))
        return checked

    # --- many Optimizers: list, watch, resync ---------------------------------------------------

    def sync(self, objects: Iterable[Mapping[str, Any]], namespace: str | None = None) -> list[Reconciliation]:
        """Reconcile every listed Optimizer (each on its own), and forget tracked ones no longer listed."""
        objects = list(objects)
        results = [self.reconcile(obj) for obj in objects]
        listed = {((o.get("metadata") or {}).get("namespace"), (o.get("metadata") or {}).get("name")) for o in objects}
        for key in self.tracked():
            if (namespace is None or key[0] == namespace) and key not in listed:
                self.forget(*key)
        return results

    def resync(self, namespace: str | None) -> tuple[list[Reconciliation], str]:
        """List the Optimizers of ``namespace`` (None: all) and reconcile them; the list's resourceVersion too."""
        items, version = self.kube.list_optimizers(namespace)
        results = self.sync(items, namespace)
        self.ready = True
        return results, version

    def handle(self, event: Mapping[str, Any]) -> Reconciliation | None:
        """One watch event: an added or modified Optimizer is reconciled, a deleted one forgotten."""
        kind, obj = event.get("type"), event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind in ("ADDED", "MODIFIED"):
            return self.reconcile(obj)
        if kind == "DELETED":
            self.forget(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        return None

    def scopes(self) -> list[str | None]:
        """The namespaces to list and watch: the managed ones, or None for all namespaces."""
        return list(self.settings.namespaces) or [None]

    def run_once(self) -> list[Reconciliation]:
        """One list-and-reconcile pass over every scope (nothing when another replica leads)."""
        if not self._lead():
            return []
        return [r for scope in self.scopes() for r in self.resync(scope)[0]]

    def run(self, stop: threading.Event) -> None:
        """List, watch and resync every scope until ``stop`` is set; then end the watches and return."""
        threads = [
            threading.Thread(target=self._loop, args=(scope, stop), name=f"reconcile-{scope or 'all'}", daemon=True)
            for scope in self.scopes()
        ]
        for thread in threads:
            thread.start()
        log.info("reconciling", scopes=[s or "*" for s in self.scopes()], resync_s=self.resync_s)
        stop.wait()
        self.interrupt()
        for thread in threads:
            thread.join(max(60.0, self.settings.milp_time_limit * 3))

    def interrupt(self) -> None:
        """End the open watches (a reconcile under way finishes first)."""
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.close()

    def _lead(self) -> bool:
        leading = self.leader is None or self.leader()
        self.telemetry.leader.set(1 if leading else 0)
        return leading

    def _loop(self, namespace: str | None, stop: threading.Event) -> None:
        """List, then watch from the list's resourceVersion until the resync is due; again until stopped."""
        failures = 0
        while not stop.is_set():
            if not self._lead():
                self.ready = True  # a standby is healthy
                stop.wait(self.resync_s)
                continue
            try:
                version = self.resync(namespace)[1]
                failures = 0
                self._watch(namespace, version, self.clock() + self.resync_s, stop)
            except KubeError as exc:
                failures += 1
                log.warning("watch_failed", namespace=namespace or "*", status=exc.status, error=str(exc))
                if exc.status != 410:  # 410 Gone: the resourceVersion is too old; list again at once
                    stop.wait(min(self.resync_s, RETRY_MIN_S * 2 ** min(failures - 1, 6)))
            except Exception:  # a bug must not end the watch of a namespace for good
                failures += 1
                log.exception("watch_crashed", namespace=namespace or "*")
                stop.wait(min(self.resync_s, RETRY_MIN_S * 2 ** min(failures - 1, 6)))

    def _watch(self, namespace: str | None, version: str, deadline: float, stop: threading.Event) -> None:
        """Handle watch events until ``deadline``, or until an Optimizer's period or back-off is due."""
        while not stop.is_set():
            until = min(deadline, self._next_due() or deadline)
            if until - self.clock() <= 0:
                return
            stream = self.kube.watch_optimizers(namespace, version, until - self.clock())
            with self._streams_lock:
                self._streams.add(stream)
            try:
                if stop.is_set():  # stopped while the watch was being opened: interrupt() did not see it
                    return
                for event in stream:
                    if stop.is_set():
                        return
                    version = str(((event.get("object") or {}).get("metadata") or {}).get("resourceVersion") or version)
                    self.handle(event)
                    if self.clock() >= min(deadline, self._next_due() or deadline):
                        return
            finally:
                with self._streams_lock:
                    self._streams.discard(stream)
                stream.close()

    def _next_due(self) -> float | None:
        with self._lock:
            times = [t for t in (tr.next_due() for tr in self._tracked.values()) if t is not None]
        return min(times) if times else None


def serve(reconciler: Reconciler, *, once: bool = False) -> list[Reconciliation]:
    """One pass (``once``), or reconcile until SIGTERM/SIGINT (a reconcile under way finishes first)."""
    if once:
        return reconciler.run_once()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    worker = threading.Thread(target=reconciler.run, args=(stop,), name="reconciler", daemon=True)
    worker.start()
    try:
        while worker.is_alive() and not stop.wait(0.5):  # short waits let the main thread run signal handlers
            pass
    finally:
        stop.set()
        worker.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("stopped")
    return []


# --- status, conditions, events -------------------------------------------------------------------


def _complete(record: CycleRecord) -> bool:
    """A run whose work is done: planned, and in apply mode every action applied."""
    if record.outcome == "idle":
        return True
    return record.outcome == "ok" and all(r.outcome in ("applied", "planned") for r in record.results)


def _status(
    record: CycleRecord,
    resource: OptimizerResourceSpec,
    dry_run: bool,
    generation: int,
    previous: Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    """The status after a cycle: conditions, and the plan (or, when there is none, the last one kept)."""
    plan = record.plan
    status: dict[str, Any] = {
        key: previous[key]
        for key in ("observedGeneration", "inputDigest", "allocations", "totalCost", "solver", "solveTimeMs")
        if key in previous
    }
    if plan is not None:
        status |= {
            "allocations": [a.model_dump(mode="json", by_alias=True) for a in _allocations(plan)],
            "totalCost": _finite(plan.total_cost, 3),
            "solver": f"{plan.solver} ({plan.status})",
            "solveTimeMs": _finite(plan.solve_ms, 1),
        }
    actions = [r.describe() for r in record.results] or [a.describe() for a in record.actions]
    if len(actions) > MAX_STATUS_ACTIONS:
        actions = [*actions[:MAX_STATUS_ACTIONS], f"... and {len(actions) - MAX_STATUS_ACTIONS} more"]
    status |= {
        "conditions": _conditions(record, resource.mode, dry_run, generation, previous, now),
        "lastRunTime": _rfc3339(record.started_at),
        "outcome": record.outcome,
        "actions": actions,
    }
    return status


def _allocations(plan: Plan) -> list[ServerAllocation]:
    """The plan's allocation of every server, in the status shape."""
    found = []
    for name, a in sorted(plan.allocations.items()):
        used = [v for v in a.variants if v.replicas > 0]
        main = next((v for v in used if v.accelerator == a.accelerator), None)
        found.append(
            ServerAllocation(
                server=name,
                accelerator=a.accelerator,
                replicas=a.replicas,
                max_batch=main.max_batch if main else 0,
                cost=_finite(a.cost, 3),
                ttft_ms=_finite(max((v.ttft_ms for v in used), default=0.0), 3),
                itl_ms=_finite(max((v.itl_ms for v in used), default=0.0), 3),
                unmet_rps=_finite(a.unmet_rps, 6),
                variants=tuple(
                    VariantStatus(accelerator=v.accelerator, replicas=v.replicas, max_batch=v.max_batch) for v in used
                ),
                reason=a.reason,
            )
        )
    return found


Verdict = tuple[bool, str, str]
"""(condition is true, reason, message)."""


def _conditions(
    record: CycleRecord, mode: str, dry_run: bool, generation: int, previous: Mapping[str, Any], now: float
) -> list[dict[str, Any]]:
    """Ready, Optimized, Applied and Degraded after a cycle."""
    plan = record.plan
    if plan is None:
        reason = {"skipped": "CollectFailed"}.get(record.outcome, "OptimizeFailed")
        if record.reason.startswith("internal error"):
            reason = "InternalError"
        return _failure_conditions(reason, record.reason, generation, previous, now)
    optimized: Verdict = (
        True,
        "Optimized",
        f"{plan.solver} ({plan.status}) in {plan.solve_ms:.0f} ms: {len(plan.allocations)} servers, "
        f"{plan.total_cost:.2f} cents/hour" + "".join(f"; {w}" for w in plan.warnings),
    )
    results = record.results
    applied_n = sum(r.outcome == "applied" for r in results)
    if record.outcome == "failed":
        applied: Verdict = (False, "ApplyFailed", record.reason)
    elif mode == "advise" or dry_run:
        why = "mode is advise" if mode == "advise" else "inferno runs with --dry-run"
        word = "DryRun" if mode == "apply" else "Advisory"
        applied = (False, word, f"{why}: {len(record.actions)} action(s) planned, none applied")
    elif record.outcome == "idle":
        applied = (True, "UpToDate", "the cluster already matches the plan")
    elif applied_n == len(results):
        applied = (True, "Applied", f"{applied_n} action(s) applied")
    else:
        rest = "; ".join(r.describe() for r in results if r.outcome != "applied")
        applied = (False, "PartiallyApplied", f"{applied_n} of {len(results)} action(s) applied; {rest}")
    if not applied[0] and applied[1] in ("ApplyFailed", "PartiallyApplied"):
        degraded: Verdict = (True, applied[1], applied[2])
    elif record.flagged:
        held = "; ".join(f"{name}: {', '.join(problems)}" for name, problems in sorted(record.flagged.items()))
        degraded = (True, "ServersHeld", f"held (no action touches them): {held}")
    else:
        degraded = (False, "AsExpected", "")
    if degraded[0] and degraded[1] != "ServersHeld":
        ready: Verdict = (False, degraded[1], degraded[2])
    else:
        ready = (True, "Reconciled", optimized[2])
    verdicts = {"Ready": ready, "Optimized": optimized, "Applied": applied, "Degraded": degraded}
    return [_condition(t, *verdicts[t], generation, previous, now) for t in crd.CONDITION_TYPES]


def _failure_conditions(
    reason: str, message: str, generation: int, previous: Mapping[str, Any], now: float
) -> list[dict[str, Any]]:
    """Conditions when nothing was optimized: not ready, not optimized, not applied, degraded."""
    verdicts: dict[str, Verdict] = {
        "Ready": (False, reason, message),
        "Optimized": (False, reason, message),
        "Applied": (False, "NotOptimized", "nothing was applied: there is no plan for this generation"),
        "Degraded": (True, reason, message),
    }
    return [_condition(t, *verdicts[t], generation, previous, now) for t in crd.CONDITION_TYPES]


def _condition(
    kind: str, true: bool, reason: str, message: str, generation: int, previous: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """One condition; lastTransitionTime moves only when its status changes."""
    status = "True" if true else "False"
    old = next((c for c in previous.get("conditions") or () if c.get("type") == kind), None)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else None
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[: EVENT_MESSAGE_MAX * 4],
        "lastTransitionTime": since or _rfc3339(now),
        "observedGeneration": generation,
    }


def _event_for(
    obj: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any], record: CycleRecord | None, now: float
) -> dict[str, Any] | None:
    """The Event a status change deserves: Ready changed, a new generation was observed, or actions applied."""
    ready = _find(new, "Ready")
    if ready is None:
        return None
    before = _find(old, "Ready")
    changed = before is None or (before.get("status"), before.get("reason")) != (ready["status"], ready["reason"])
    newly_observed = new.get("observedGeneration") is not None and new.get("observedGeneration") != old.get(
        "observedGeneration"
    )
    applied = [r for r in (record.results if record else ()) if r.outcome == "applied"]
    if not (changed or newly_observed or applied):
        return None
    if applied:
        reason, message = "Applied", "; ".join(r.action.describe() for r in applied)
    else:
        reason, message = ready["reason"], ready["message"]
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    involved = {"apiVersion": crd.API_VERSION, "kind": crd.KIND, "namespace": namespace, "name": name}
    if meta.get("uid"):
        involved["uid"] = str(meta["uid"])
    stamp = _rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:EVENT_MESSAGE_MAX] or reason,
        "type": "Normal" if ready["status"] == "True" else "Warning",
        "source": {"component": "inferno"},
        "reportingComponent": "inferno",
        "reportingInstance": "inferno",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _find(status: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return next((dict(c) for c in status.get("conditions") or () if c.get("type") == kind), None)


def _problems(exc: ValidationError, where: Where) -> list[Problem]:
    """pydantic errors as Problems with field paths (a whole-object error names the object's path)."""
    return [Problem(p.file, p.location.rstrip("."), p.message) for p in validation_problems(exc, where)]


def _get(data: Any, key: str) -> Any:
    """``data[key]`` with the key matched case-insensitively, as the specs match keys; None when absent."""
    if not isinstance(data, dict):
        return None
    return next((v for k, v in data.items() if isinstance(k, str) and k.lower() == key.lower()), None)


def _raw_period(spec: Any) -> float | None:
    """The period of a raw spec in seconds (at least the shortest allowed), None when absent or malformed."""
    period = _get(spec, "period")
    if not isinstance(period, str) or not re.fullmatch(crd.DURATION, period):
        return None
    return max(crd.MIN_PERIOD_S, crd.duration_seconds(period))


def _finite(value: float, digits: int) -> float:
    """A JSON-safe number: rounded, and 0 for NaN or infinity (which the API cannot store)."""
    return round(value, digits) if math.isfinite(value) else 0.0


def _rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
