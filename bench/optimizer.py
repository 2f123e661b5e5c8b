"""Optimizer benchmark: build and solve times of the MILP and greedy solvers; prints JSON rows.

Synthetic systems of 25, 100, 400 and 1,000 servers over 20 accelerator configurations of 9 card
types, limited and unlimited, homogeneous and heterogeneous; greedy alone on 10,000 servers; and the
27-server reference set (``../shared``) end to end when it is present.

    .venv/bin/python bench/optimizer.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

from inferno.optimizer import OptimizerOptions, optimize
from inferno.optimizer.greedy import GreedySolver
from inferno.optimizer.milp import MilpOptions, MilpSolver
from inferno.spec import SaturationPolicy
from inferno.state import Candidate, OptimizationProblem, ServerDemand
from inferno.system import load_system

TYPES = {  # card type -> (relative speed, cost per card)
    "H200": (3.2, 480),
    "H100": (2.8, 390),
    "A100": (1.6, 180),
    "L40S": (1.2, 120),
    "A10G": (0.6, 75),
    "L4": (0.45, 55),
    "MI300X": (3.0, 420),
    "Gaudi3": (2.4, 300),
    "T4": (0.25, 30),
}
CONFIGS = [*[(t, m) for t in TYPES for m in (1, 2)][:18], ("H100", 4), ("A100", 4)]


def synthetic(n_servers: int, *, limited: bool, seed: int = 7) -> OptimizationProblem:
    """A random problem: each server has candidates on 8-20 of the 20 configurations."""
    rng = random.Random(seed)
    servers = []
    need: dict[str, float] = dict.fromkeys(TYPES, 0.0)
    for i in range(n_servers):
        demand = rng.uniform(0.2, 40.0)
        size = rng.choice((1, 1, 2, 4))  # model size: minimum cards per replica
        priority = rng.choice((1, 10, 100))
        cands = []
        for acc_type, mult in rng.sample(CONFIGS, rng.randint(8, 20)):
            if mult < size and mult * 2 < size:
                continue
            speed, card_cost = TYPES[acc_type]
            rate = speed * mult * rng.uniform(0.6, 1.4) / size
            replicas = math.ceil(demand / rate)
            cost = card_cost * mult
            cands.append(
                Candidate(
                    f"s{i}",
                    f"{mult}x{acc_type}",
                    acc_type,
                    mult,
                    cost,
                    rate,
                    64,
                    640,
                    replicas,
                    1.1 * cost * replicas,
                )
            )
        cands.sort(key=lambda c: (c.value, c.cost, c.accelerator))
        best = cands[0]
        need[best.acc_type] += best.cards
        servers.append(ServerDemand(f"s{i}", "m", "c", priority, demand, 0, 0, "", 0, False, tuple(cands)))
    total = sum(need.values())
    capacity = {t: int(total * 0.7 / len(TYPES)) if limited else int(total * 2) for t in TYPES}
    return OptimizationProblem(tuple(servers), capacity, unlimited=not limited)


def row(**fields: object) -> None:
    """Print one JSON row."""
    print(json.dumps(fields), flush=True)


def bench_synthetic(sizes: list[int]) -> None:
    """MILP vs greedy on synthetic problems."""
    for n in sizes:
        for limited in (False, True):
            problem = synthetic(n, limited=limited)
            greedy = GreedySolver(SaturationPolicy.PRIORITY_EXHAUSTIVE).solve(problem)
            for hetero in (False, True):
                milp = MilpSolver(MilpOptions(time_limit_s=10.0, rel_gap=0.01, heterogeneous=hetero)).solve(problem)
                row(
                    bench="milp-synthetic",
                    servers=n,
                    accelerators=len(CONFIGS),
                    limited=limited,
                    heterogeneous=hetero,
                    build_ms=round(milp.build_ms, 1),
                    solve_ms=round(milp.solve_ms, 1),
                    total_ms=round(milp.build_ms + milp.solve_ms, 1),
                    status=milp.status,
                    gap=milp.gap,
                    objective=milp.objective,
                    milp_cost=round(milp.total_cost, 2),
                    milp_unmet_rps=round(sum(a.unmet_rps for a in milp.allocations.values()), 3),
                    greedy_cost=round(greedy.total_cost, 2),
                    greedy_unmet_rps=round(sum(a.unmet_rps for a in greedy.allocations.values()), 3),
                    greedy_ms=round(greedy.solve_ms, 1),
                )


def bench_greedy(n: int) -> None:
    """Greedy alone on a very large problem."""
    problem = synthetic(n, limited=True)
    start = time.perf_counter()
    plan = GreedySolver(SaturationPolicy.PRIORITY_EXHAUSTIVE).solve(problem)
    row(bench="greedy-large", servers=n, solve_ms=round((time.perf_counter() - start) * 1000, 1), cost=plan.total_cost)


def bench_reference() -> None:
    """The 27-server reference set end to end (candidates + build + solve)."""
    path = Path(__file__).resolve().parents[2] / "shared/reference/inferno-sample-data/2025/large"
    if not path.is_dir():
        row(bench="milp-reference", skipped=f"{path} not found")
        return
    spec = load_system(path).spec
    for solver in ("milp", "greedy"):
        options = OptimizerOptions(solver=solver, queue_model="inferno-2025", batch_policy="reference")
        optimize(spec, options)  # warm-up: imports and HiGHS load
        start = time.perf_counter()
        plan = optimize(spec, options)
        total = (time.perf_counter() - start) * 1000
        row(
            bench=f"{solver}-reference",
            servers=len(spec.server_data.servers),
            total_ms=round(total, 1),
            build_ms=round(plan.build_ms, 1),
            solve_ms=round(plan.solve_ms, 1),
            cost=round(plan.total_cost, 2),
        )


def main() -> None:
    """Run every benchmark."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sizes only")
    args = parser.parse_args()
    bench_reference()
    bench_synthetic([25, 100] if args.quick else [25, 100, 400, 1000])
    bench_greedy(1000 if args.quick else 10000)


if __name__ == "__main__":
    main()
