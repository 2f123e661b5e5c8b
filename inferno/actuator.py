"""The actuator stage: the only writer to the cluster.

:class:`KubeActuator` applies :class:`~inferno.state.Action` values, one JSON patch per Deployment:
``spec.replicas``, the vLLM container's ``--max-num-seqs`` (only when the action changes it, in the form
the command line already uses), the allocation labels and a decision annotation; then it records an
Event. It re-reads each Deployment first and skips one that changed since it was collected; the patch
also tests the resourceVersion it read, so a write that races another one fails instead of clobbering
it. Scale-ups go first, and when an action of a server does not apply, that server's remaining actions
are held (make before break).

:class:`DryRunActuator` prints the actions and sends no request at all. Both satisfy :class:`Actuator`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from inferno.errors import ActuateError, ConfigError, Problem
from inferno.k8s import (
    ACCELERATOR_LABEL,
    DECISION_ANNOTATION,
    MAX_BATCH_LABEL,
    Deployment,
    DeploymentApi,
    KubeError,
    current_max_num_seqs,
    find_vllm_container,
)
from inferno.logs import get_logger
from inferno.state import Action, ActionResult, Actuation, Allocation, Plan, Snapshot, VariantAllocation
from inferno.system import Where, validation_problems

__all__ = ["Actuator", "ApplyError", "DryRunActuator", "KubeActuator", "plan_actions", "read_actions"]

log = get_logger(__name__)

EVENT_MESSAGE_MAX = 1024
"""Longest Event message the API server keeps."""


class Actuator(Protocol):
    """Carries out actions on the cluster (or pretends to)."""

    def apply(self, actions: Sequence[Action]) -> Actuation:
        """Apply ``actions``; ApplyError when the API server refused any of them."""
        ...


class ApplyError(ActuateError):
    """The API server refused some actions; ``actuation`` says which were applied and which were not."""

    def __init__(self, actuation: Actuation) -> None:
        self.actuation = actuation
        counts = ", ".join(
            f"{len(actuation.having(o))} {o}" for o in ("failed", "held", "skipped", "applied") if actuation.having(o)
        )
        lines = [f"not every action was applied ({counts})"]
        lines += [r.describe() for r in actuation.results]
        super().__init__("\n".join(lines))


class KubeActuator:
    """Patches Deployments through a :class:`~inferno.k8s.DeploymentApi` (:class:`~inferno.k8s.Kube`, or in memory)."""

    def __init__(
        self, kube: DeploymentApi, clock: Callable[[], float] = time.time, vllm_container: str | None = None
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._container = vllm_container

    def apply(self, actions: Sequence[Action]) -> Actuation:
        """Apply scale-ups first, then the rest; hold a server's actions once one of them did not apply."""
        held: dict[str, str] = {}
        results = []
        for action in sorted(actions, key=lambda a: a.replicas_to <= a.replicas_from):
            if action.server in held:
                result = ActionResult(action, "held", f"not tried: {held[action.server]}")
            else:
                result = self._apply(action)
                if result.outcome != "applied":
                    held[action.server] = f"{action.namespace}/{action.deployment} was {result.outcome}"
            log.info(
                "action",
                outcome=result.outcome,
                deployment=f"{action.namespace}/{action.deployment}",
                replicas=f"{action.replicas_from}->{action.replicas_to}",
                max_num_seqs=f"{action.max_num_seqs_from}->{action.max_num_seqs_to}",
                detail=result.detail,
            )
            results.append(result)
        actuation = Actuation(tuple(results))
        if actuation.having("failed"):
            raise ApplyError(actuation)
        return actuation

    def _apply(self, action: Action) -> ActionResult:
        try:
            current = self._kube.get_deployment(action.namespace, action.deployment)
        except KubeError as exc:
            return ActionResult(action, "failed", str(exc))
        try:
            change = self._change_since_collection(action, current)
            if change:
                return ActionResult(action, "skipped", f"changed since collection: {change}")
            ops = self._patch(action, current)
        except ValueError as exc:
            return ActionResult(action, "failed", str(exc))
        try:
            self._kube.patch_deployment(action.namespace, action.deployment, ops)
        except KubeError as exc:
            return ActionResult(action, "failed", str(exc))
        try:
            self._kube.create_event(action.namespace, self._event(action, current))
        except KubeError as exc:
            log.warning("event_not_recorded", deployment=f"{action.namespace}/{action.deployment}", error=str(exc))
            return ActionResult(action, "applied", f"the Event was not recorded: {exc}")
        return ActionResult(action, "applied")

    def _change_since_collection(self, action: Action, current: Deployment) -> str:
        """What changed in the Deployment since the action was planned ('' = nothing)."""
        if action.resource_version and current.resource_version != action.resource_version:
            return f"resourceVersion {action.resource_version} -> {current.resource_version}"
        if action.generation is not None and current.generation != action.generation:
            return f"generation {action.generation} -> {current.generation}"
        if current.replicas != action.replicas_from:
            return f"spec.replicas is {current.replicas}, the action expects {action.replicas_from}"
        if action.changes_max_num_seqs:
            seqs = current_max_num_seqs(current, find_vllm_container(current, self._container))
            if seqs != action.max_num_seqs_from:
                return f"--max-num-seqs is {seqs}, the action expects {action.max_num_seqs_from}"
        return ""

    def _patch(self, action: Action, current: Deployment) -> list[dict[str, Any]]:
        """The JSON patch of one action: all of it applies, or none."""
        ops: list[dict[str, Any]] = []
        if current.resource_version:
            ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": current.resource_version})
        ops.append({"op": "add", "path": "/spec/replicas", "value": action.replicas_to})
        labels = {ACCELERATOR_LABEL: action.accelerator} if action.accelerator else {}
        if action.changes_max_num_seqs and action.max_num_seqs_to is not None:
            container = find_vllm_container(current, self._container)
            field, items = container.with_max_num_seqs(action.max_num_seqs_to)
            ops.append(
                {"op": "add", "path": f"/spec/template/spec/containers/{container.index}/{field}", "value": items}
            )
            labels[MAX_BATCH_LABEL] = str(action.max_num_seqs_to)
        ops += _set_keys("/metadata/labels", bool(current.labels), labels)
        ops += _set_keys(
            "/metadata/annotations", bool(current.annotations), {DECISION_ANNOTATION: self._decision(action)}
        )
        return ops

    def _decision(self, action: Action) -> str:
        seqs = [action.max_num_seqs_from, action.max_num_seqs_to] if action.changes_max_num_seqs else None
        decision = {
            "time": _timestamp(self._clock()),
            "replicas": [action.replicas_from, action.replicas_to],
            "maxNumSeqs": seqs,
            "reason": action.reason,
        }
        return json.dumps(decision, separators=(",", ":"))

    def _event(self, action: Action, current: Deployment) -> dict[str, Any]:
        now = self._clock()
        involved = {"apiVersion": "apps/v1", "kind": "Deployment", "namespace": action.namespace}
        involved["name"] = action.deployment
        if current.uid:
            involved["uid"] = current.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{action.deployment}.{int(now * 1e9):x}", "namespace": action.namespace},
            "involvedObject": involved,
            "reason": "Reconfigured" if action.changes_max_num_seqs else "Scaled",
            "message": f"{action.describe()}: {action.reason}"[:EVENT_MESSAGE_MAX],
            "type": "Normal",
            "source": {"component": "inferno"},
            "reportingComponent": "inferno",
            "reportingInstance": "inferno",
            "firstTimestamp": _timestamp(now),
            "lastTimestamp": _timestamp(now),
            "count": 1,
        }


def _set_keys(path: str, exists: bool, values: dict[str, str]) -> list[dict[str, Any]]:
    """JSON-patch ops that set keys of the map at ``path`` (creating the map when it does not exist)."""
    if not values:
        return []
    if not exists:
        return [{"op": "add", "path": path, "value": values}]
    return [{"op": "add", "path": f"{path}/{_escape(k)}", "value": v} for k, v in values.items()]


def _escape(key: str) -> str:
    """A map key as a JSON-pointer token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _timestamp(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DryRunActuator:
    """Prints the actions (a table, or JSON lines) and sends nothing to the cluster."""

    def __init__(self, stream: TextIO, as_json: bool = False) -> None:
        self._stream = stream
        self._as_json = as_json

    def apply(self, actions: Sequence[Action]) -> Actuation:
        """Print ``actions``; every one is 'planned'."""
        if self._as_json:
            adapter = TypeAdapter(Action)
            for action in actions:
                self._stream.write(json.dumps(adapter.dump_python(action, mode="json")) + "\n")
        else:
            table = Table(title=f"planned actions (dry run): {len(actions)}")
            for column in ("deployment", "server", "accelerator", "replicas", "max-num-seqs", "reason"):
                table.add_column(column, justify="right" if column in ("replicas", "max-num-seqs") else "left")
            for a in actions:
                seqs = f"{a.max_num_seqs_from or 'default'} -> {a.max_num_seqs_to}" if a.changes_max_num_seqs else "-"
                table.add_row(
                    f"{a.namespace}/{a.deployment}",
                    a.server,
                    a.accelerator,
                    f"{a.replicas_from} -> {a.replicas_to}",
                    seqs,
                    a.reason,
                )
            Console(file=self._stream, soft_wrap=True, width=200).print(table)
        return Actuation(tuple(ActionResult(a, "planned") for a in actions), dry_run=True)


def plan_actions(plan: Plan, snapshot: Snapshot) -> tuple[Action, ...]:
    """The actions that take the observed variants to the plan's.

    A variant the plan does not use goes to 0 replicas; --max-num-seqs changes only on variants that keep
    replicas. Servers with problems in the snapshot get no action (their last decision holds), and a plan
    variant without a Deployment is logged, since the actuator does not create Deployments.
    """
    actions = []
    for server in snapshot.servers:
        allocation = plan.allocations.get(server.name)
        if allocation is None or not server.complete:
            continue
        wanted = {v.accelerator: v for v in allocation.variants}
        for accelerator in sorted(set(wanted) - {v.accelerator for v in server.variants}):
            if wanted[accelerator].replicas:
                log.warning("no_deployment_for_variant", server=server.name, accelerator=accelerator)
        for variant in server.variants:
            target = wanted.get(variant.accelerator)
            replicas = target.replicas if target else 0
            seqs = target.max_batch if target and target.replicas and target.max_batch else None
            if seqs == variant.max_num_seqs:
                seqs = None
            if replicas == variant.replicas and seqs is None:
                continue
            actions.append(
                Action(
                    namespace=variant.namespace,
                    deployment=variant.deployment,
                    server=server.name,
                    accelerator=variant.accelerator,
                    replicas_from=variant.replicas,
                    replicas_to=replicas,
                    max_num_seqs_from=variant.max_num_seqs,
                    max_num_seqs_to=seqs,
                    reason=_reason(plan, allocation, target),
                    resource_version=variant.resource_version,
                    generation=variant.generation,
                )
            )
    return tuple(actions)


def _reason(plan: Plan, allocation: Allocation, target: VariantAllocation | None) -> str:
    head = f"{plan.solver} ({plan.status})"
    if target is None or target.replicas == 0:
        text = f"{head}: variant not used; {allocation.replicas} replicas serve {allocation.demand_rps:.3g} req/s"
    else:
        text = (
            f"{head}: {target.replicas} x {target.accelerator} for {target.rate_rps:.3g} of"
            f" {allocation.demand_rps:.3g} req/s, TTFT {target.ttft_ms:.0f} ms, ITL {target.itl_ms:.1f} ms"
        )
    return f"{text}; {allocation.reason}" if allocation.reason else text


_ACTIONS = TypeAdapter(list[Action])


def read_actions(text: str, source: str, namespaces: Sequence[str] = ()) -> tuple[Action, ...]:
    """Actions from JSON: a list, ``{"actions": [...]}``, or one object per line (the dry run's --json output).

    ConfigError naming ``source`` and the field of each bad value, or each action outside ``namespaces``
    (the managed namespaces; empty = all).
    """
    try:
        data: Any = json.loads(text) if text.strip() else []
    except json.JSONDecodeError:
        data = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                data += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as exc:
                raise ConfigError([Problem(source, f"line {number}", f"invalid JSON: {exc.msg}")]) from exc
    if isinstance(data, dict):
        data = data.get("actions", [data])
    try:
        actions = tuple(_ACTIONS.validate_python(data))
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, Where(source))) from exc
    outside = [
        Problem(source, f"[{i}].namespace", f"{a.namespace!r} is not a managed namespace ({', '.join(namespaces)})")
        for i, a in enumerate(actions)
        if namespaces and a.namespace not in namespaces
    ]
    if outside:
        raise ConfigError(outside)
    return actions
