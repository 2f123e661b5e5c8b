"""The reference's limited-capacity greedy solver and the unlimited solver.

Greedy (design section 5): every server ranks its candidates by transition value; its *regret* is what
it loses if it cannot have its first choice. Within each priority group, servers with the highest regret
pick first; a server whose candidate does not fit moves on to its next candidate and waits its turn
again. Servers that run out of candidates are left to the saturation policy, which shares what is left.
Ties are broken by server and accelerator name so that runs are reproducible.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby

from inferno.spec import SaturationPolicy
from inferno.state import Allocation, Candidate, OptimizationProblem, Plan, ServerDemand, VariantAllocation

UNLIMITED_CARDS = 1 << 60


def allocation_of(server: ServerDemand, cand: Candidate | None, replicas: int, reason: str = "") -> Allocation:
    """The allocation of ``replicas`` replicas of ``cand`` to ``server`` (no candidate: nothing)."""
    if cand is None or (replicas == 0 and server.demand_rps > 0):
        return Allocation(server.name, (), server.demand_rps, server.demand_rps, reason or server.reason)
    served = min(server.demand_rps, replicas * cand.rate_per_replica)
    unmet = max(0.0, server.demand_rps - served)
    if unmet > 1e-9 * max(1.0, server.demand_rps) and not reason:
        reason = f"{cand.replicas - replicas if replicas < cand.replicas else 0} replica(s) short"
        if server.max_replicas and replicas >= server.max_replicas:
            reason = f"capped at maxNumReplicas={server.max_replicas}"
    variant = VariantAllocation(
        accelerator=cand.accelerator,
        acc_type=cand.acc_type,
        replicas=replicas,
        max_batch=cand.max_batch,
        cost=cand.cost_per_replica * replicas,
        cards=cand.cards_per_replica * replicas,
        rate_rps=served,
        ttft_ms=0.0,
        itl_ms=0.0,
    )
    return Allocation(server.name, (variant,), server.demand_rps, unmet if unmet > 1e-9 else 0.0, reason)


class UnlimitedSolver:
    """Each server takes its best-ranked candidate; capacity is ignored."""

    name = "unlimited"

    def solve(self, problem: OptimizationProblem) -> Plan:
        """Solve ``problem`` ignoring capacity."""
        start = time.perf_counter()
        allocations = {
            s.name: allocation_of(
                s, s.candidates[0] if s.candidates else None, s.candidates[0].replicas if s.candidates else 0
            )
            for s in problem.servers
        }
        return Plan(
            allocations, self.name, "heuristic", (time.perf_counter() - start) * 1000, capacity=problem.capacity
        )


@dataclass
class _Entry:
    server: ServerDemand
    index: int = 0

    @property
    def candidate(self) -> Candidate:
        return self.server.candidates[self.index]

    def key(self) -> tuple[float, float, str]:
        """Sort key inside a priority group: regret desc, value desc, name."""
        cands = self.server.candidates
        value = cands[self.index].value
        regret = cands[self.index + 1].value - value if self.index + 1 < len(cands) else float("inf")
        return (-regret, -value, self.server.name)


class GreedySolver:
    """The predecessor's greedy algorithm with its saturation policies."""

    name = "greedy"

    def __init__(
        self, saturation_policy: SaturationPolicy = SaturationPolicy.NONE, delayed_best_effort: bool = False
    ) -> None:
        self.policy = saturation_policy
        self.delayed = delayed_best_effort

    def solve(self, problem: OptimizationProblem) -> Plan:
        """Allocate greedily within the capacity of ``problem``."""
        if problem.unlimited:
            plan = UnlimitedSolver().solve(problem)
            return Plan(plan.allocations, self.name, plan.status, plan.solve_ms, capacity=problem.capacity)
        start = time.perf_counter()
        free = dict(problem.capacity)
        allocations: dict[str, Allocation] = {}
        groups = [
            list(g) for _, g in groupby(sorted(problem.servers, key=lambda s: s.priority), key=lambda s: s.priority)
        ]
        pending: list[list[ServerDemand]] = []
        for group in groups:
            left = self._allocate_group(group, free, allocations)
            if self.delayed or self.policy is SaturationPolicy.ROUND_ROBIN:
                pending.append(left)
            else:
                self._saturate(left, free, allocations)
        if self.policy is SaturationPolicy.ROUND_ROBIN:
            self._round_robin([s for group in pending for s in group], free, allocations)
        else:
            for left in pending:
                self._saturate(left, free, allocations)
        for server in problem.servers:
            if server.name not in allocations:
                reason = server.reason or "no capacity left on any feasible accelerator"
                allocations[server.name] = allocation_of(server, None, 0, reason)
        ordered = {s.name: allocations[s.name] for s in problem.servers}
        return Plan(ordered, self.name, "heuristic", (time.perf_counter() - start) * 1000, capacity=problem.capacity)

    @staticmethod
    def _allocate_group(
        group: list[ServerDemand], free: dict[str, int], allocations: dict[str, Allocation]
    ) -> list[ServerDemand]:
        """Greedy pass over one priority group; returns the servers left unallocated, in rank order."""
        entries = [_Entry(s) for s in group if s.candidates]
        queue = sorted(entries, key=_Entry.key)
        keys = [e.key() for e in queue]
        rank = {e.server.name: i for i, e in enumerate(queue)}
        left: list[ServerDemand] = []
        while queue:
            entry = queue.pop(0)
            keys.pop(0)
            cand = entry.candidate
            if free.get(cand.acc_type, 0) >= cand.cards:
                free[cand.acc_type] = free.get(cand.acc_type, 0) - cand.cards
                allocations[entry.server.name] = allocation_of(entry.server, cand, cand.replicas)
                continue
            entry.index += 1
            if entry.index >= len(entry.server.candidates):
                left.append(entry.server)
                continue
            key = entry.key()
            pos = bisect.bisect_right(keys, key)
            keys.insert(pos, key)
            queue.insert(pos, entry)
        left.sort(key=lambda s: rank[s.name])
        return left

    def _saturate(self, left: list[ServerDemand], free: dict[str, int], allocations: dict[str, Allocation]) -> None:
        if self.policy is SaturationPolicy.PRIORITY_EXHAUSTIVE:
            for server in left:
                cand = _first_fitting(server.candidates, free)
                if cand is not None:
                    n = min(cand.replicas, free[cand.acc_type] // cand.cards_per_replica)
                    free[cand.acc_type] -= n * cand.cards_per_replica
                    allocations[server.name] = allocation_of(server, cand, n)
        elif self.policy is SaturationPolicy.PRIORITY_ROUND_ROBIN:
            self._round_robin(left, free, allocations)

    @staticmethod
    def _round_robin(left: list[ServerDemand], free: dict[str, int], allocations: dict[str, Allocation]) -> None:
        """One replica at a time to each server in turn until nothing more fits or all are served."""
        chosen: dict[str, Candidate] = {}
        given: dict[str, int] = {}
        active = list(left)
        while active:
            still = []
            for server in active:
                cand = chosen.get(server.name) or _first_fitting(server.candidates, free)
                if cand is None or free.get(cand.acc_type, 0) < cand.cards_per_replica:
                    continue
                chosen[server.name] = cand
                free[cand.acc_type] -= cand.cards_per_replica
                given[server.name] = given.get(server.name, 0) + 1
                if given[server.name] < cand.replicas:
                    still.append(server)
            active = still
        for server in left:
            if server.name in given:
                allocations[server.name] = allocation_of(server, chosen[server.name], given[server.name])


def _first_fitting(candidates: Iterable[Candidate], free: dict[str, int]) -> Candidate | None:
    """The first candidate with room for at least one replica."""
    return next((c for c in candidates if free.get(c.acc_type, 0) >= c.cards_per_replica), None)
