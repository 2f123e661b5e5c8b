"""From a system to an optimization problem: per (server, accelerator) candidates sized by a queue model.

For every server and every accelerator configuration its model has performance data on, the chosen
queue model and batch policy give the max request rate per replica that meets the class's SLOs; the
replicas needed for the server's demand, their cost, the cards they hold and the reference's
transition value follow (design section 5).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from inferno.errors import ModelError
from inferno.queueing import (
    QueueModel,
    Targets,
    Workload,
    choose_batch,
    make_queue_model,
    params_from_perf,
    size,
)
from inferno.spec import AcceleratorSpec, ModelAcceleratorPerfData, ServerSpec, SystemSpec
from inferno.state import Candidate, OptimizationProblem, Plan, ServerDemand

SWITCH_FACTOR = 0.1
"""Share of old + new cost charged for moving a server to another accelerator (reference value)."""


@dataclass(frozen=True)
class _Sized:
    """A queue model with the operating point a candidate was sized at."""

    model: QueueModel
    workload: Workload
    max_batch: int
    max_queue: int


@dataclass(frozen=True)
class Performance:
    """Latency look-up for the candidates of a problem: fills expected TTFT/ITL into a plan."""

    sized: dict[tuple[str, str], _Sized]

    def latency(self, server: str, accelerator: str, rate_per_replica: float) -> tuple[float, float]:
        """Mean (TTFT, ITL) in ms of one replica of ``accelerator`` at ``rate_per_replica`` req/s."""
        entry = self.sized.get((server, accelerator))
        if entry is None or rate_per_replica <= 0:
            return 0.0, 0.0
        metrics = entry.model.analyze(rate_per_replica, entry.workload, entry.max_batch, entry.max_queue)
        return metrics.ttft_ms, metrics.itl_ms

    def annotate(self, plan: Plan) -> Plan:
        """The plan with every variant's expected TTFT/ITL at its per-replica rate."""
        allocations = {}
        for name, alloc in plan.allocations.items():
            variants = []
            for v in alloc.variants:
                ttft, itl = self.latency(name, v.accelerator, v.rate_rps / v.replicas if v.replicas else 0.0)
                variants.append(replace(v, ttft_ms=ttft, itl_ms=itl))
            allocations[name] = replace(alloc, variants=tuple(variants))
        return replace(plan, allocations=allocations)


def build_problem(
    spec: SystemSpec,
    *,
    queue_model: str,
    batch_policy: str,
    unlimited: bool | None = None,
    allowed: Mapping[str, Collection[str]] | None = None,
) -> tuple[OptimizationProblem, Performance]:
    """The optimization problem of ``spec``.

    ``unlimited`` overrides the system's optimizer setting; ``allowed`` restricts a server to the
    accelerators it has Deployments for (the daemon cannot create new variants).
    """
    accelerators = {a.name: a for a in spec.accelerator_data.accelerators}
    classes = {c.name: c for c in spec.service_class_data.service_classes}
    rows: dict[str, list[ModelAcceleratorPerfData]] = {}
    for row in spec.model_data.models:
        rows.setdefault(row.name, []).append(row)
    sized: dict[tuple[str, str], _Sized] = {}
    servers = []
    for srv in spec.server_data.servers:
        service_class = classes.get(srv.class_name)
        priority = service_class.priority if service_class else 100
        target = next((t for t in service_class.model_targets if t.model == srv.model), None) if service_class else None
        targets = Targets(target.slo_ttft, target.slo_itl, target.slo_tps) if target else Targets()
        load = srv.current_alloc.load
        demand = load.arrival_rate / 60.0
        if targets.tps > 0 and load.avg_out_tokens > 0:
            demand = targets.tps / load.avg_out_tokens
        base = ServerDemand(
            name=srv.name,
            model=srv.model,
            class_name=srv.class_name,
            priority=priority,
            demand_rps=demand,
            min_replicas=srv.min_num_replicas,
            max_replicas=srv.max_num_replicas,
            current_accelerator=srv.current_alloc.accelerator,
            current_replicas=srv.current_alloc.num_replicas,
            keep_accelerator=srv.keep_accelerator,
            candidates=(),
        )
        if target is None or targets == Targets():
            servers.append(replace(base, reason=f"class {srv.class_name!r} sets no SLO target for model {srv.model!r}"))
            continue
        options = rows.get(srv.model, [])
        if srv.keep_accelerator and srv.current_alloc.accelerator:
            options = [r for r in options if r.acc == srv.current_alloc.accelerator]
        if allowed is not None and srv.name in allowed:
            options = [r for r in options if r.acc in allowed[srv.name]]
        old_cost = _current_cost(srv, accelerators, options)
        candidates, skipped = [], []
        for row in options:
            acc = accelerators[row.acc]
            try:
                found = _candidate(srv, row, acc, targets, demand, old_cost, queue_model, batch_policy)
            except ModelError as exc:
                found = str(exc)
            if isinstance(found, str):
                skipped.append(f"{row.acc}: {found}")
                continue
            candidates.append(found[0])
            sized[(srv.name, row.acc)] = found[1]
        candidates.sort(key=lambda c: (c.value, c.cost, c.accelerator))
        reason = ""
        if not candidates:
            reason = "; ".join(skipped) or f"no performance data for model {srv.model!r}" + (
                f" on the kept accelerator {srv.current_alloc.accelerator!r}" if srv.keep_accelerator else ""
            ) + (
                f" on its variants ({', '.join(sorted(allowed[srv.name]))})" if allowed and srv.name in allowed else ""
            )
            reason = f"no feasible accelerator ({reason})" if skipped else reason
        servers.append(replace(base, candidates=tuple(candidates), reason=reason))
    capacity = {c.type: c.count for c in spec.capacity_data.count}
    is_unlimited = spec.optimizer_data.optimizer.unlimited if unlimited is None else unlimited
    return OptimizationProblem(tuple(servers), capacity, is_unlimited), Performance(sized)


def _current_cost(
    srv: ServerSpec, accelerators: dict[str, AcceleratorSpec], rows: list[ModelAcceleratorPerfData]
) -> float:
    """cents/hour of the server's current allocation (as given, or computed from its accelerator)."""
    current = srv.current_alloc
    if current.cost > 0 or not current.accelerator or current.num_replicas == 0:
        return current.cost
    row = next((r for r in rows if r.acc == current.accelerator), None)
    acc = accelerators.get(current.accelerator)
    return acc.cost * (row.acc_count if row else 1) * current.num_replicas if acc else 0.0


def _candidate(
    srv: ServerSpec,
    row: ModelAcceleratorPerfData,
    acc: AcceleratorSpec,
    targets: Targets,
    demand: float,
    old_cost: float,
    queue_model: str,
    batch_policy: str,
) -> tuple[Candidate, _Sized] | str:
    """The candidate of ``srv`` on ``acc`` and its sized model, or the reason it is infeasible."""
    load = srv.current_alloc.load
    workload = Workload(load.avg_in_tokens, max(load.avg_out_tokens, 1.0))
    model = make_queue_model(
        queue_model, params_from_perf(queue_model, row), max_batched_tokens=row.max_num_batched_tokens
    )
    n, q = choose_batch(
        model,
        workload,
        targets,
        batch_policy,
        max_batch_size=row.max_batch_size,
        at_tokens=row.at_tokens,
        override=srv.max_batch_size,
        max_queue=srv.max_queue_size,
    )
    sizing = size(model, workload, targets, n, q)
    if not sizing.feasible:
        return sizing.reason
    rate = sizing.rate_rps
    replicas = max(math.ceil(demand / rate), srv.min_num_replicas) if demand > 0 else srv.min_num_replicas
    if srv.max_num_replicas:
        replicas = min(replicas, srv.max_num_replicas)
    entry = _Sized(model, workload, n, q)
    cost_per_replica = acc.cost * row.acc_count
    new_cost = cost_per_replica * replicas
    current = srv.current_alloc
    if current.accelerator == acc.name and current.num_replicas == replicas:
        value = 0.0
    elif current.accelerator == acc.name:
        value = new_cost - old_cost
    else:
        value = SWITCH_FACTOR * (old_cost + new_cost) + (new_cost - old_cost)
    return Candidate(
        server=srv.name,
        accelerator=acc.name,
        acc_type=acc.type,
        cards_per_replica=row.acc_count * acc.multiplicity,
        cost_per_replica=cost_per_replica,
        rate_per_replica=rate,
        max_batch=n,
        max_queue=q,
        replicas=replicas,
        value=value,
    ), entry
