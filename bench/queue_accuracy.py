"""Accuracy of the queue models against the discrete-event simulator of a vLLM replica; prints JSON.

Grid: two parameter sets (a small model, ~8B on one H100, and a large one, ~70B on two), short
(L 256, K 512) and long (L 4096, K 256) prompts, max batch N 8, 32, 128 and 256, output lengths
exponential (geometric), lognormal (sigma 1, long-tailed) and constant (a control), and loads of 10%
to 95% of the replica's capacity. The capacity is measured on the simulator by saturating it, so every
load is one the simulated replica can carry. Arrivals are Poisson; prompt lengths are constant.

At each point every queue model is analysed at the simulator's rate (Q = 10 N) and compared on mean
TTFT and mean ITL; for the sized rate, the simulator's mean TTFT and ITL at that rate are given to
``size`` as targets: the right answer is the rate itself. "inferno-2025" gets decode/prefill
parameters derived from the iteration parameters at the point's mean lengths (``linear_params``).

One JSON object per point on stdout, then summary objects per distribution, for all prompts and per
prompt class: the mean absolute percentage error (MAPE) per model (see ``summary``).

    .venv/bin/python bench/queue_accuracy.py [--requests N] [--workers W] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferno.queueing import QueueModel, Targets, Workload, make_queue_model, size
from inferno.sim import EngineConfig, Lengths, Replica, simulate

PARAMS = {
    "small": {"alpha": 7.0, "beta": 0.06, "gamma": 4e-5},
    "large": {"alpha": 22.0, "beta": 0.2, "gamma": 5e-5},
}
PROMPTS = {"short": (256, 512), "long": (4096, 256)}
BATCHES = (8, 32, 128, 256)
LOADS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
DISTRIBUTIONS = ("exponential", "lognormal", "constant")
MODELS = ("iteration", "inferno-2025", "mm1k")
GOAL_LOAD = 0.9
"""The accuracy goal covers loads up to this share of capacity."""
SIZED_LOADS = (0.5, 0.9)
"""Loads whose latencies serve as sizing targets in the sized-rate error."""


@dataclass(frozen=True)
class Point:
    """One configuration of the grid (all loads are run for it)."""

    params: str
    prompt: str
    max_batch: int
    distribution: str
    requests: int

    @property
    def workload(self) -> Workload:
        """Mean lengths."""
        return Workload(*PROMPTS[self.prompt])

    def engine(self) -> EngineConfig:
        """The simulated replica."""
        return EngineConfig(**PARAMS[self.params], max_num_seqs=self.max_batch)

    def outputs(self) -> Lengths:
        """Output length distribution."""
        return Lengths(self.workload.out_tokens, self.distribution)


def linear_params(alpha: float, beta: float, gamma: float, workload: Workload) -> dict[str, float]:
    """The 2025 decode/prefill parameters matching iteration parameters at ``workload`` (one prefill chunk).

    Each request in the batch adds its mean work per iteration, delta = (w_prefill + w_decode) / (1 + K),
    so d(n) is the iteration model's itl(n) = itl(1) + (n - 1) delta and p(n) its prefill(n) =
    alpha + (n - 1) delta + w_prefill.
    """
    big_l, big_k = workload.in_tokens, workload.out_tokens
    w_prefill = (beta + gamma) * big_l
    w_decode = beta * big_k + gamma * big_k * (big_l + (big_k + 1) / 2)
    delta = (w_prefill + w_decode) / (1 + big_k)
    itl_1 = alpha + beta + gamma * (big_l + (big_k + 1) / 2)
    return {"alpha": itl_1 - delta, "beta": delta, "gamma": alpha - delta + w_prefill, "delta": delta / big_l}


def queue_models(point: Point) -> dict[str, QueueModel]:
    """The compared models with the point's parameters."""
    params = PARAMS[point.params]
    return {
        "iteration": make_queue_model("iteration", params),
        "mm1k": make_queue_model("mm1k", params),
        "inferno-2025": make_queue_model("inferno-2025", linear_params(**params, workload=point.workload)),
    }


def capacity_rps(point: Point) -> float:
    """Completions per second of the simulated replica kept full (all requests queued at time 0)."""
    rng = np.random.default_rng(12345)
    n = max(4000, 40 * point.max_batch)
    outputs = point.outputs().sample(rng, n)
    replica = Replica(point.engine())
    for k in outputs:
        replica.submit(0.0, int(point.workload.in_tokens), int(k))
    finish = np.sort([r.finish_ms for r in replica.advance_to(math.inf)])
    lo, hi = finish[n // 10], finish[n - n // 5]
    return (n - n // 5 - n // 10) / (hi - lo) * 1000


def _error(model: float, truth: float) -> float:
    """Signed relative error of ``model`` against ``truth``."""
    return (model - truth) / truth


def run_point(point: Point) -> list[dict[str, Any]]:
    """Rows of every load at one configuration."""
    workload, models = point.workload, queue_models(point)
    capacity = capacity_rps(point)
    max_queue = 10 * point.max_batch
    rows: list[dict[str, Any]] = []
    for i, load in enumerate(LOADS):
        rate = load * capacity
        sim = simulate(
            point.engine(),
            in_tokens=Lengths(workload.in_tokens, "constant"),
            out_tokens=point.outputs(),
            rate_rps=rate,
            requests=point.requests,
            seed=1000 + i,
        )
        row: dict[str, Any] = {
            "params": point.params,
            "prompt": point.prompt,
            "in_tokens": workload.in_tokens,
            "out_tokens": workload.out_tokens,
            "max_batch": point.max_batch,
            "distribution": point.distribution,
            "load": load,
            "rate_rps": rate,
            "sim": {
                "capacity_rps": capacity,
                "throughput_rps": sim.throughput_rps,
                "ttft_ms": sim.ttft.mean,
                "ttft_p90_ms": sim.ttft.p90,
                "itl_ms": sim.itl.mean,
                "in_service": sim.in_service,
            },
        }
        targets = Targets(ttft_ms=sim.ttft.mean, itl_ms=sim.itl.mean)
        for name, model in models.items():
            metrics = model.analyze(rate, workload, point.max_batch, max_queue)
            sized = size(model, workload, targets, point.max_batch, max_queue)
            row[name] = {
                "max_rate_rps": metrics.max_rate_rps,
                "ttft_ms": metrics.ttft_ms,
                "itl_ms": metrics.itl_ms,
                "in_service": metrics.in_service,
                "sized_rps": sized.rate_rps,
                "feasible": sized.feasible,
                "ttft_err": _error(metrics.ttft_ms, sim.ttft.mean),
                "itl_err": _error(metrics.itl_ms, sim.itl.mean),
                "sized_err": _error(sized.rate_rps, rate),
                "capacity_err": _error(metrics.max_rate_rps, capacity),
            }
        rows.append(row)
    return rows


def _mape(errors: list[float]) -> float:
    """Mean absolute percentage error, rounded to 0.1%."""
    return round(100 * float(np.mean(np.abs(errors))), 1) if errors else math.nan


def summary(rows: list[dict[str, Any]], distribution: str, prompt: str | None = None) -> dict[str, Any]:
    """MAPE (%) per model for one distribution (and one prompt class, or both).

    ttft, itl: loads <= 90%; ttft_all, itl_all: every load; sized: loads 50-90% (where a latency
    target binds: below, the curves are nearly flat and the rate is ill-determined); infeasible: how
    often, at loads <= 90%, the model declared the simulator's own latency unreachable; capacity:
    lambda_max against the simulator's capacity.
    """
    chosen = [r for r in rows if r["distribution"] == distribution and prompt in (None, r["prompt"])]
    out: dict[str, Any] = {"summary": distribution, "prompt": prompt or "all", "points": len(chosen)}
    for name in MODELS:
        goal = [r[name] for r in chosen if r["load"] <= GOAL_LOAD]
        every = [r[name] for r in chosen]
        sized = [r[name] for r in chosen if SIZED_LOADS[0] <= r["load"] <= SIZED_LOADS[1]]
        out[name] = {
            "ttft": _mape([m["ttft_err"] for m in goal]),
            "itl": _mape([m["itl_err"] for m in goal]),
            "ttft_all": _mape([m["ttft_err"] for m in every]),
            "itl_all": _mape([m["itl_err"] for m in every]),
            "sized": _mape([m["sized_err"] for m in sized]),
            "infeasible": sum(1 for m in goal if not m["feasible"]),
            "capacity": _mape([m["capacity_err"] for m in every]),
        }
    return out


def main() -> None:
    """Run the grid and print rows and summaries."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per simulation")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--quick", action="store_true", help="one parameter set, N 32, 4,000 requests")
    args = parser.parse_args()
    points = [
        Point(params, prompt, n, dist, args.requests)
        for dist in DISTRIBUTIONS
        for params in PARAMS
        for prompt in PROMPTS
        for n in BATCHES
    ]
    if args.quick:
        points = [
            Point("small", p.prompt, 32, p.distribution, 4000)
            for p in points
            if p.params == "small" and p.max_batch == 32
        ]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for point_rows in pool.map(run_point, points):
            for row in point_rows:
                print(json.dumps(row))
            rows += point_rows
    for dist in DISTRIBUTIONS:
        for prompt in (None, *PROMPTS):
            print(json.dumps(summary(rows, dist, prompt)))
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1), "points": len(rows)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
