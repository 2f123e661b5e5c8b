"""The optimizer stage: candidates from queue models, then one global allocation by a pluggable solver."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from inferno.errors import ConfigError, SolveError
from inferno.interfaces import Solver
from inferno.logs import get_logger
from inferno.optimizer.candidates import build_problem
from inferno.optimizer.greedy import GreedySolver, UnlimitedSolver
from inferno.optimizer.milp import MilpOptions, MilpSolver
from inferno.queueing import DEFAULT_QUEUE_MODEL
from inferno.spec import AllocationData, AllocationSolution, SaturationPolicy, SystemSpec
from inferno.state import Plan

__all__ = ["SOLVERS", "OptimizerOptions", "make_solver", "optimize", "to_solution"]

log = get_logger(__name__)

SOLVERS = ("milp", "greedy", "unlimited")
"""Solver names, the first is the default."""


@dataclass(frozen=True)
class OptimizerOptions:
    """How to optimize; None means "as the system's optimizer data says"."""

    solver: str = "milp"
    queue_model: str = DEFAULT_QUEUE_MODEL
    batch_policy: str = "optimal"
    heterogeneous: bool | None = None
    unlimited: bool | None = None
    saturation_policy: SaturationPolicy | None = None
    delayed_best_effort: bool | None = None
    time_limit_s: float = 10.0
    rel_gap: float = 1e-3


def make_solver(options: OptimizerOptions, spec: SystemSpec) -> Solver:
    """The solver ``options.solver`` configured from ``options`` and the system's optimizer data."""
    data = spec.optimizer_data.optimizer
    if options.solver == "milp":
        heterogeneous = data.heterogeneous if options.heterogeneous is None else options.heterogeneous
        return MilpSolver(MilpOptions(options.time_limit_s, options.rel_gap, heterogeneous))
    if options.solver == "greedy":
        return _greedy(options, spec)
    if options.solver == "unlimited":
        return UnlimitedSolver()
    raise ConfigError(f"unknown solver {options.solver!r}; choose one of: {', '.join(SOLVERS)}")


def _greedy(options: OptimizerOptions, spec: SystemSpec) -> GreedySolver:
    data = spec.optimizer_data.optimizer
    return GreedySolver(
        data.saturation_policy if options.saturation_policy is None else options.saturation_policy,
        data.delayed_best_effort if options.delayed_best_effort is None else options.delayed_best_effort,
    )


def optimize(
    spec: SystemSpec,
    options: OptimizerOptions | None = None,
    allowed: Mapping[str, Collection[str]] | None = None,
) -> Plan:
    """One global plan for every server of ``spec`` (``allowed``: accelerators per server, see build_problem).

    When the MILP fails or times out without a solution, the greedy solver answers instead and the plan
    says so (status 'fallback' and a warning).
    """
    options = options or OptimizerOptions()
    solver = make_solver(options, spec)
    problem, performance = build_problem(
        spec,
        queue_model=options.queue_model,
        batch_policy=options.batch_policy,
        unlimited=options.unlimited,
        allowed=allowed,
    )
    try:
        plan = solver.solve(problem)
    except SolveError as exc:
        if solver.name != "milp":
            raise
        warning = f"milp failed, greedy answered instead: {exc}"
        log.warning("solver_fallback", reason=str(exc))
        fallback = _greedy(options, spec).solve(problem)
        plan = replace(fallback, status="fallback", warnings=(*fallback.warnings, warning))
    return performance.annotate(plan)


def to_solution(plan: Plan, spec: SystemSpec) -> AllocationSolution:
    """The plan in the reference AllocationSolution format (one accelerator per server: its main variant)."""
    loads = {s.name: s.current_alloc.load for s in spec.server_data.servers}
    allocations = {}
    for name, alloc in plan.allocations.items():
        main = next((v for v in alloc.variants if v.accelerator == alloc.accelerator), None)
        if main is None or main.replicas == 0:
            continue
        allocations[name] = AllocationData(
            accelerator=main.accelerator,
            num_replicas=alloc.replicas,
            max_batch=main.max_batch,
            cost=alloc.cost,
            itl_average=main.itl_ms,
            ttft_average=main.ttft_ms,
            load=loads[name],
        )
    return AllocationSolution(allocations=allocations)
