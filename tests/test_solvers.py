"""Tests of the solvers on hand-built problems (no queue model involved)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferno.optimizer.greedy import GreedySolver, UnlimitedSolver
from inferno.optimizer.milp import MilpOptions, MilpSolver
from inferno.spec import SaturationPolicy
from inferno.state import Candidate, OptimizationProblem, Plan, ServerDemand

ACCS = {"A": ("A", 1, 10.0), "B": ("B", 1, 4.0), "2xB": ("B", 2, 8.0), "C": ("C", 1, 25.0)}
"""accelerator -> (card type, cards per replica, cost per replica)."""


def server(
    name: str, demand: float, rates: dict[str, float], *, priority: int = 1, min_r: int = 0, max_r: int = 0
) -> ServerDemand:
    """A server with one candidate per accelerator in ``rates`` (req/s per replica), sorted by cost."""
    cands = []
    for acc, rate in rates.items():
        acc_type, cards, cost = ACCS[acc]
        replicas = max(math.ceil(demand / rate), min_r) if demand > 0 else min_r
        if max_r:
            replicas = min(replicas, max_r)
        cands.append(Candidate(name, acc, acc_type, cards, cost, rate, 32, 320, replicas, 1.1 * cost * replicas))
    cands.sort(key=lambda c: (c.value, c.cost, c.accelerator))
    return ServerDemand(name, "m", "c", priority, demand, min_r, max_r, "", 0, False, tuple(cands))


def used(plan: Plan) -> dict[str, int]:
    """Cards per type in ``plan``."""
    return plan.cards_used()


SOLVERS = [GreedySolver(), MilpSolver()]


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.name)
def test_cheapest_candidate_when_capacity_is_ample(solver: GreedySolver | MilpSolver) -> None:
    """With room for everything each server gets its cheapest way to meet demand."""
    problem = OptimizationProblem((server("s1", 10, {"A": 2.0, "B": 0.5}),), {"A": 100, "B": 100})
    alloc = solver.solve(problem).allocations["s1"]
    assert (alloc.accelerator, alloc.replicas, alloc.cost, alloc.unmet_rps) == ("A", 5, 50.0, 0.0)


def test_greedy_gives_first_choice_to_highest_regret() -> None:
    """The server that loses most without its first choice gets it when both want the same cards."""
    s1 = server("s1", 4, {"A": 1.0, "B": 1.0})  # A 40, B 16 -> regret 26.4
    s2 = server("s2", 4, {"B": 1.0, "C": 1.0})  # B 16, C 100 -> regret 92.4
    plan = GreedySolver().solve(OptimizationProblem((s1, s2), {"A": 10, "B": 4, "C": 10}))
    assert plan.allocations["s2"].accelerator == "B"
    assert plan.allocations["s1"].accelerator == "A"


def test_milp_beats_greedy_when_greedy_is_myopic() -> None:
    """MILP finds the cheaper joint assignment that the regret order misses."""
    s1 = server("s1", 4, {"B": 1.0, "A": 1.0})  # B 16 / A 40: regret 26.4
    s2 = server("s2", 4, {"B": 1.0, "C": 0.8})  # B 16 / C 125: regret 118.8 -> greedy gives B to s2
    s3 = server("s3", 2, {"B": 1.0, "C": 1.0})  # B 8 / C 50: regret 46.2
    problem = OptimizationProblem((s1, s2, s3), {"A": 10, "B": 6, "C": 10})
    greedy, milp = GreedySolver().solve(problem), MilpSolver().solve(problem)
    assert all(a.unmet_rps == 0 for p in (greedy, milp) for a in p.allocations.values())
    assert milp.total_cost <= greedy.total_cost
    assert milp.status == "optimal"


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.name)
def test_capacity_goes_to_the_higher_priority_class(solver: GreedySolver | MilpSolver) -> None:
    """When cards are short the priority-1 server is fully served before the priority-5 one."""
    hi = server("hi", 6, {"B": 1.0}, priority=1)
    lo = server("lo", 6, {"B": 1.0}, priority=5)
    plan = solver.solve(OptimizationProblem((lo, hi), {"B": 8}))
    assert plan.allocations["hi"].unmet_rps == 0
    assert plan.allocations["hi"].replicas == 6
    assert used(plan)["B"] <= 8


def test_milp_serves_the_remaining_demand_partially() -> None:
    """MILP gives the low-priority server what is left and reports its unmet demand."""
    plan = MilpSolver().solve(
        OptimizationProblem(
            (server("hi", 6, {"B": 1.0}, priority=1), server("lo", 6, {"B": 1.0}, priority=5)), {"B": 8}
        )
    )
    lo = plan.allocations["lo"]
    assert (lo.replicas, lo.unmet_rps) == (2, pytest.approx(4.0))
    assert lo.reason == "capacity exhausted on every feasible accelerator"


def test_heterogeneous_mode_mixes_accelerator_types() -> None:
    """With too few cards of any one type, heterogeneous mode serves the demand with a mix."""
    problem = OptimizationProblem((server("s", 10, {"A": 1.0, "B": 1.0}),), {"A": 6, "B": 6})
    homo = MilpSolver(MilpOptions(heterogeneous=False)).solve(problem).allocations["s"]
    hetero = MilpSolver(MilpOptions(heterogeneous=True)).solve(problem).allocations["s"]
    assert len(homo.variants) == 1 and homo.unmet_rps == pytest.approx(4.0)
    assert {v.accelerator: v.replicas for v in hetero.variants} == {"A": 4, "B": 6}
    assert hetero.unmet_rps == 0


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.name)
def test_min_and_max_replicas(solver: GreedySolver | MilpSolver) -> None:
    """minNumReplicas holds at zero load; maxNumReplicas caps and leaves the rest unmet."""
    idle = server("idle", 0, {"B": 1.0}, min_r=2)
    capped = server("capped", 10, {"B": 1.0}, max_r=3)
    plan = solver.solve(OptimizationProblem((idle, capped), {"B": 100}))
    assert plan.allocations["idle"].replicas == 2
    assert plan.allocations["capped"].replicas == 3
    assert plan.allocations["capped"].unmet_rps == pytest.approx(7.0)
    assert "maxNumReplicas=3" in plan.allocations["capped"].reason


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.name)
def test_scale_to_zero(solver: GreedySolver | MilpSolver) -> None:
    """A server with no load and minNumReplicas 0 gets no replicas and costs nothing."""
    plan = solver.solve(OptimizationProblem((server("z", 0, {"B": 1.0}),), {"B": 4}))
    assert (plan.allocations["z"].replicas, plan.allocations["z"].cost) == (0, 0.0)


def test_saturation_policies() -> None:
    """Exhaustive fills servers in order; round robin shares replicas one at a time."""
    servers = (server("s1", 5, {"B": 1.0}, priority=1), server("s2", 5, {"B": 1.0}, priority=1))
    problem = OptimizationProblem(servers, {"B": 6})
    none = GreedySolver(SaturationPolicy.NONE).solve(problem)
    exhaustive = GreedySolver(SaturationPolicy.PRIORITY_EXHAUSTIVE).solve(problem)
    round_robin = GreedySolver(SaturationPolicy.ROUND_ROBIN).solve(problem)
    assert sorted(a.replicas for a in none.allocations.values()) == [0, 5]
    assert sorted(a.replicas for a in exhaustive.allocations.values()) == [1, 5]
    # both servers fit 5 replicas only one at a time: s1 first, then s2 takes the last card
    problem = OptimizationProblem(servers, {"B": 4})
    assert sorted(a.replicas for a in round_robin.allocations.values()) == [1, 5]
    rr = GreedySolver(SaturationPolicy.ROUND_ROBIN).solve(problem)
    assert sorted(a.replicas for a in rr.allocations.values()) == [2, 2]
    assert rr.allocations["s1"].unmet_rps == pytest.approx(3.0)


def test_unlimited_takes_each_best_candidate() -> None:
    """The unlimited solver ignores capacity and equals the MILP without capacity constraints."""
    servers = (server("s1", 10, {"A": 2.0, "B": 0.5}), server("s2", 3, {"B": 1.0, "C": 5.0}))
    tight = OptimizationProblem(servers, {"A": 1, "B": 1})
    free = OptimizationProblem(servers, {"A": 1, "B": 1}, unlimited=True)
    unlimited = UnlimitedSolver().solve(tight)
    assert unlimited.total_cost == MilpSolver().solve(free).total_cost == 50.0 + 12.0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    demands=st.lists(st.floats(0, 20), min_size=1, max_size=6),
    priorities=st.lists(st.integers(1, 3), min_size=6, max_size=6),
    caps=st.tuples(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12)),
    hetero=st.booleans(),
)
def test_no_solver_exceeds_capacity_or_starves_priority(
    demands: list[float], priorities: list[int], caps: tuple[int, int, int], hetero: bool
) -> None:
    """No plan exceeds capacity, and a higher class is never short while a lower one holds usable cards."""
    servers = tuple(
        server(f"s{i}", d, {"A": 1.5, "B": 1.0, "2xB": 2.5, "C": 4.0}, priority=priorities[i])
        for i, d in enumerate(demands)
    )
    problem = OptimizationProblem(servers, {"A": caps[0], "B": caps[1], "C": caps[2]})
    for solver in (GreedySolver(SaturationPolicy.PRIORITY_EXHAUSTIVE), MilpSolver(MilpOptions(heterogeneous=hetero))):
        plan = solver.solve(problem)
        for acc_type, cards in used(plan).items():
            assert cards <= problem.capacity[acc_type], (solver.name, acc_type)
        if solver.name != "milp":
            continue
        free = {t: n - used(plan).get(t, 0) for t, n in problem.capacity.items()}
        for short in (s for s in servers if plan.allocations[s.name].unmet_rps > 0):
            served = short.demand_rps - plan.allocations[short.name].unmet_rps
            for acc_type in problem.capacity:
                own = sum(v.cards for v in plan.allocations[short.name].variants if v.acc_type == acc_type)
                lower = sum(
                    v.cards
                    for o in servers
                    if o.priority > short.priority
                    for v in plan.allocations[o.name].variants
                    if v.acc_type == acc_type
                )
                options = [c for c in short.candidates if c.acc_type == acc_type]

                def best(cards: int, options: list[Candidate] = options) -> float:
                    return max(((cards // c.cards_per_replica) * c.rate_per_replica for c in options), default=0.0)

                # taking the cards of lower-priority servers would let it serve more: priority violated
                gain = best(free[acc_type] + own + lower) - best(free[acc_type] + own)
                assert gain <= 1e-9 or served >= min(short.demand_rps, best(free[acc_type] + own + lower)) - 1e-9, (
                    f"{short.name} short while lower-priority servers hold {lower} {acc_type} cards it could use"
                )


def test_milp_gives_a_short_higher_class_the_accelerator_that_serves_it_most() -> None:
    """Homogeneous and short: the higher class takes both C cards (8 rps) over 3x 2xB (7.5); the lower one gets B."""
    servers = (
        server("low", 1.0, {"A": 1.5, "B": 1.0, "2xB": 2.5, "C": 4.0}, priority=2),
        server("high", 13.0, {"A": 1.5, "B": 1.0, "2xB": 2.5, "C": 4.0}, priority=1),
    )
    plan = MilpSolver().solve(OptimizationProblem(servers, {"A": 0, "B": 6, "C": 2}))
    high, low = plan.allocations["high"], plan.allocations["low"]
    assert [(v.accelerator, v.replicas) for v in high.variants] == [("C", 2)]
    assert high.unmet_rps == pytest.approx(5.0)
    assert [(v.accelerator, v.replicas) for v in low.variants] == [("B", 1)] and low.unmet_rps == 0.0
