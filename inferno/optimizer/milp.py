"""The default solver: a mixed-integer program in Pyomo, solved by HiGHS (highspy).

Variables: integer replicas ``n[k]`` per candidate k = (server, accelerator); in homogeneous mode a
binary ``y[k]`` lets each server use one accelerator; ``u[s]`` in [0, 1] is the share of server s's
demand left unmet in replica units and ``w[s]`` in request rate, and integer ``m[s]`` the replicas
missing below minNumReplicas.

Demand is expressed in replica units: candidate k needs ``N_k = ceil(R_s / r_k)`` replicas for the
whole demand, so ``n_k / N_k`` is the share it covers. With one accelerator this is exactly
``r_k n_k >= R_s`` for integer ``n_k``, and the relaxation is integral when capacity is ample, which
keeps HiGHS fast on a thousand servers. In heterogeneous mode the shares of several accelerators add
up (slightly conservative: each share is rounded up to whole replicas).

    min   sum_k cost_k n_k                                   (accelerator cost, cents/hour)
        + sum_s P_s (u_s + 10 w_s + m_s)                     (unmet demand, by class priority)
        + sum_k switch_k n_k + sum_s change_s (d+_s + d-_s)  (transition: discourage needless changes)
    s.t.  sum_k n_k / N_k + u_s >= 1                          demand per server, in replicas
          sum_k r_k n_k / R_s + w_s >= 1                      and in request rate
          sum_k n_k + m_s >= min_s ;  sum_k n_k <= max_s      replica bounds per server
          sum_k cards_k n_k <= C_t                            capacity per card type
          n_k <= N_k y_k ; sum_k y_k <= 1                     homogeneous mode only

P_s is twice the dearest full allocation of server s, so leaving even one replica's share unmet costs
more than buying it; each step up in priority multiplies it by PRIORITY_STEP, so capacity goes to the
most important classes first. The model is always feasible.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass

import pyomo.environ as pyo
from pyomo.contrib.solver.common.factory import SolverFactory
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition

from inferno.errors import SolveError
from inferno.logs import get_logger
from inferno.state import Allocation, OptimizationProblem, Plan, ServerDemand, VariantAllocation

log = get_logger(__name__)

SWITCH_FACTOR = 0.1
"""Transition cost of a replica on an accelerator the server does not use now, as a share of its cost."""
CHANGE_FACTOR = 0.02
"""Transition cost of adding or removing a replica of the current accelerator, as a share of its cost."""
RATE_WEIGHT = 10.0
"""Weight of the unmet share of the request rate against the unmet share in replica units."""
PRIORITY_STEP = 100.0
"""Factor between the unmet-demand penalties of consecutive priority levels."""


@dataclass(frozen=True)
class MilpOptions:
    """Solver settings: time limit (s), relative MIP gap, heterogeneous (mix of accelerators per server)."""

    time_limit_s: float = 10.0
    rel_gap: float = 1e-3
    heterogeneous: bool = False


class MilpSolver:
    """Pyomo + HiGHS mixed-integer program over replicas per (server, accelerator)."""

    name = "milp"

    def __init__(self, options: MilpOptions | None = None) -> None:
        self.options = options or MilpOptions()

    def solve(self, problem: OptimizationProblem) -> Plan:
        """Build and solve the program; raise SolveError when HiGHS returns no usable solution."""
        start = time.perf_counter()
        model, index = self._build(problem)
        build_ms = (time.perf_counter() - start) * 1000
        solver = SolverFactory("highs")
        t0 = time.perf_counter()
        try:
            results = solver.solve(
                model,
                time_limit=self.options.time_limit_s,
                rel_gap=self.options.rel_gap,
                load_solutions=False,
                raise_exception_on_nonoptimal_result=False,
            )
        except Exception as exc:  # HiGHS or Pyomo failure: the caller falls back to greedy
            raise SolveError(f"HiGHS failed: {exc}") from exc
        solve_ms = (time.perf_counter() - t0) * 1000
        if results.solution_status not in (SolutionStatus.optimal, SolutionStatus.feasible):
            raise SolveError(f"HiGHS returned no solution ({results.termination_condition.name})")
        results.solution_loader.load_vars()
        optimal = results.termination_condition == TerminationCondition.convergenceCriteriaSatisfied
        objective = results.incumbent_objective
        bound = results.objective_bound
        gap = None
        if objective is not None and bound is not None and math.isfinite(bound):
            gap = abs(objective - bound) / max(abs(objective), 1e-9)
        allocations = self._read(problem, model, index)
        return Plan(
            allocations,
            self.name,
            "optimal" if optimal and (gap is None or gap <= self.options.rel_gap + 1e-12) else "feasible",
            solve_ms,
            build_ms=build_ms,
            objective=objective,
            gap=gap,
            capacity=problem.capacity,
        )

    def _build(self, problem: OptimizationProblem) -> tuple[pyo.ConcreteModel, list[tuple[int, int]]]:
        servers = problem.servers
        index = [(i, j) for i, s in enumerate(servers) for j in _undominated(s)]
        cand = {(i, j): servers[i].candidates[j] for i, j in index}
        served = [i for i, s in enumerate(servers) if s.candidates]
        priorities = sorted({servers[i].priority for i in served}, reverse=True)
        rank = {p: r for r, p in enumerate(priorities)}  # 0 = least important
        full = {i: max(max(c.cost for c in servers[i].candidates), 1.0) for i in served}
        penalty = {i: 2.0 * full[i] * PRIORITY_STEP ** rank[servers[i].priority] for i in served}

        m = pyo.ConcreteModel()
        m.K = pyo.Set(initialize=index, dimen=2, ordered=True)
        m.S = pyo.Set(initialize=served, ordered=True)
        m.n = pyo.Var(m.K, domain=pyo.NonNegativeIntegers, bounds=lambda _, i, j: (0, cand[i, j].replicas))
        m.u = pyo.Var(m.S, domain=pyo.NonNegativeReals, bounds=(0, 1))
        m.w = pyo.Var(m.S, domain=pyo.NonNegativeReals, bounds=(0, 1))
        m.mm = pyo.Var(m.S, domain=pyo.NonNegativeIntegers, bounds=lambda _, i: (0, servers[i].min_replicas))
        by_server: dict[int, list[tuple[int, int]]] = defaultdict(list)
        by_type: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for k in index:
            by_server[k[0]].append(k)
            by_type[cand[k].acc_type].append(k)

        m.demand = pyo.Constraint(
            m.S,
            rule=lambda mdl, i: (
                sum(mdl.n[k] / cand[k].replicas for k in by_server[i] if cand[k].replicas) + mdl.u[i] >= 1
                if servers[i].demand_rps > 0
                else pyo.Constraint.Skip
            ),
        )
        m.rate = pyo.Constraint(
            m.S,
            rule=lambda mdl, i: (
                sum(cand[k].rate_per_replica * mdl.n[k] for k in by_server[i]) / servers[i].demand_rps + mdl.w[i] >= 1
                if servers[i].demand_rps > 0
                else pyo.Constraint.Skip
            ),
        )
        m.min_replicas = pyo.Constraint(
            m.S,
            rule=lambda mdl, i: (
                (sum(mdl.n[k] for k in by_server[i]) + mdl.mm[i] >= servers[i].min_replicas)
                if servers[i].min_replicas
                else pyo.Constraint.Skip
            ),
        )
        m.max_replicas = pyo.Constraint(
            m.S,
            rule=lambda mdl, i: (
                (sum(mdl.n[k] for k in by_server[i]) <= servers[i].max_replicas)
                if servers[i].max_replicas
                else pyo.Constraint.Skip
            ),
        )
        if not problem.unlimited:
            types = sorted(by_type)
            m.T = pyo.Set(initialize=types, ordered=True)
            m.capacity = pyo.Constraint(
                m.T,
                rule=lambda mdl, t: (
                    sum(cand[k].cards_per_replica * mdl.n[k] for k in by_type[t]) <= problem.capacity.get(t, 0)
                ),
            )
        if not self.options.heterogeneous:
            m.y = pyo.Var(m.K, domain=pyo.Binary)
            m.link = pyo.Constraint(m.K, rule=lambda mdl, i, j: mdl.n[i, j] <= cand[i, j].replicas * mdl.y[i, j])
            m.one = pyo.Constraint(m.S, rule=lambda mdl, i: sum(mdl.y[k] for k in by_server[i]) <= 1)

        transition = []
        current = [i for i in served if servers[i].current_accelerator and servers[i].current_replicas > 0]
        keep = {
            i: next((k for k in by_server[i] if cand[k].accelerator == servers[i].current_accelerator), None)
            for i in current
        }
        for i in current:
            for k in by_server[i]:
                if k != keep[i]:
                    transition.append(SWITCH_FACTOR * cand[k].cost_per_replica * m.n[k])
        changed = [i for i in current if keep[i] is not None]
        m.C = pyo.Set(initialize=changed, ordered=True)
        m.up = pyo.Var(m.C, domain=pyo.NonNegativeReals)
        m.down = pyo.Var(m.C, domain=pyo.NonNegativeReals)
        m.change = pyo.Constraint(
            m.C, rule=lambda mdl, i: mdl.n[keep[i]] - servers[i].current_replicas == mdl.up[i] - mdl.down[i]
        )
        for i in changed:
            transition.append(CHANGE_FACTOR * cand[keep[i]].cost_per_replica * (m.up[i] + m.down[i]))  # type: ignore[index]

        m.cost = pyo.Objective(
            expr=sum(cand[k].cost_per_replica * m.n[k] for k in index)
            + sum(penalty[i] * (m.u[i] + RATE_WEIGHT * m.w[i] + m.mm[i]) for i in served)
            + sum(transition),
            sense=pyo.minimize,
        )
        return m, index

    @staticmethod
    def _read(
        problem: OptimizationProblem, model: pyo.ConcreteModel, index: list[tuple[int, int]]
    ) -> dict[str, Allocation]:
        replicas: dict[int, dict[int, int]] = defaultdict(dict)
        for i, j in index:
            n = round(pyo.value(model.n[i, j]))
            if n > 0:
                replicas[i][j] = n
        allocations = {}
        for i, server in enumerate(problem.servers):
            chosen = replicas.get(i, {})
            capacity_rps = sum(server.candidates[j].rate_per_replica * n for j, n in chosen.items())
            share = min(1.0, server.demand_rps / capacity_rps) if capacity_rps > 0 else 0.0
            variants = tuple(
                VariantAllocation(
                    accelerator=c.accelerator,
                    acc_type=c.acc_type,
                    replicas=n,
                    max_batch=c.max_batch,
                    cost=c.cost_per_replica * n,
                    cards=c.cards_per_replica * n,
                    rate_rps=c.rate_per_replica * n * share,
                    ttft_ms=0.0,
                    itl_ms=0.0,
                )
                for j, n in sorted(chosen.items())
                for c in (server.candidates[j],)
            )
            if not variants and server.candidates and server.demand_rps == 0:
                best = server.candidates[0]
                variants = (
                    VariantAllocation(best.accelerator, best.acc_type, 0, best.max_batch, 0.0, 0, 0.0, 0.0, 0.0),
                )
            unmet = max(0.0, server.demand_rps - capacity_rps)
            reason = server.reason
            if unmet > 1e-9 and not reason:
                reason = "capacity exhausted on every feasible accelerator"
                if server.max_replicas and sum(chosen.values()) >= server.max_replicas:
                    reason = f"capped at maxNumReplicas={server.max_replicas}"
            allocations[server.name] = Allocation(
                server.name, variants, server.demand_rps, unmet if unmet > 1e-9 else 0.0, reason
            )
        return allocations


def _undominated(server: ServerDemand) -> list[int]:
    """Indexes of the candidates worth a variable.

    A candidate is dominated when another one on the same card type covers the whole demand with no
    more cost and no more cards, in replicas no larger (so it fits wherever the other fits); ties keep
    the better-ranked one. The current accelerator is always kept because transition costs set it apart.
    """
    cands = server.candidates
    keep = []
    for j, c in enumerate(cands):
        dominated = c.accelerator != server.current_accelerator and any(
            o.acc_type == c.acc_type
            and o.cost <= c.cost
            and o.cards <= c.cards
            and o.cards_per_replica <= c.cards_per_replica
            and (o.cost < c.cost or o.cards < c.cards or i < j)
            for i, o in enumerate(cands)
            if i != j and o.replicas > 0 and c.replicas > 0
        )
        if not dominated:
            keep.append(j)
    return keep
