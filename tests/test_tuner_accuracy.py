"""Accuracy of the online tuner (issue 5, "Done when"): convergence, outliers, steps, and the simulator.

Scenario: 8 replicas of one (model, accelerator) with max batch 32 and queue 320; every cycle each
replica runs at its own load, 10-70% of the replica's capacity, drawn at random; the token mix of the
whole variant moves over time (256/256, 1024/128 and 512/512 input/output tokens, two cycles each);
each replica reports its mean TTFT and ITL with 5% multiplicative noise. Errors are taken at every
(mix, load) point of the grid, so a mix not seen for a while still counts.

Two kinds of truth. The queue model with known parameters isolates the tuner: there the estimates
must predict within 5%. The discrete-event simulator is the real target, but the ``iteration`` model
is not exact against it (its TTFT is 6-9% off on average and 12-26% at worst even with the best
possible parameters, docs/queue-models.md); there the tuner must reach that floor, not 5%.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from inferno.queueing import QueueModel, Workload, make_queue_model
from inferno.sim import EngineConfig, Lengths, simulate
from inferno.tuner import EKFTuner, Observation, TuneReport
from inferno.tuner.fit import fit

PARAMS = {
    "8b-1xh100": {"alpha": 7.0, "beta": 0.06, "gamma": 4e-5},
    "design-example": {"alpha": 12.0, "beta": 0.05, "gamma": 5e-4},
    "70b-2xh100": {"alpha": 22.0, "beta": 0.2, "gamma": 5e-5},
}
MIXES = ((256, 256), (1024, 128), (512, 512))
LOADS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
N, Q, REPLICAS, NOISE = 32, 320, 8, 0.05
KEY = ("llm", "H100")


@dataclass(frozen=True)
class Point:
    """One (mix, load) operating point and the true mean latencies there."""

    rate_rps: float
    in_tokens: int
    out_tokens: int
    ttft_ms: float
    itl_ms: float


def model_grid(truth: QueueModel, capacity: QueueModel) -> list[Point]:
    """The grid with latencies from ``truth``; loads are shares of ``capacity``'s max rate."""
    points = []
    for (big_l, big_k), load in itertools.product(MIXES, LOADS):
        workload = Workload(big_l, big_k)
        rate = load * capacity.max_rate_rps(workload, N, Q)
        metrics = truth.analyze(rate, workload, N, Q)
        points.append(Point(rate, big_l, big_k, metrics.ttft_ms, metrics.itl_ms))
    return points


def cycle_observations(points: Sequence[Point], cycle: int, rng: np.random.Generator) -> list[Observation]:
    """One cycle: the mix of the moment, the loads shuffled over the replicas (all seven, one twice), 5% noise."""
    mix = cycle // 2 % len(MIXES)
    loads = np.resize(rng.permutation(len(LOADS)), REPLICAS)
    observations = []
    for replica, load in enumerate(loads):
        p = points[mix * len(LOADS) + int(load)]
        ttft, itl = p.ttft_ms * (1 + NOISE * rng.standard_normal()), p.itl_ms * (1 + NOISE * rng.standard_normal())
        observations.append(Observation(*KEY, p.rate_rps, p.in_tokens, p.out_tokens, N, Q, ttft, itl, f"pod-{replica}"))
    return observations


def errors(model: QueueModel, params: dict[str, float], points: Sequence[Point]) -> np.ndarray:
    """Relative errors [TTFT, ITL] of ``model`` with ``params`` at every point (one row per point)."""
    tuned = model.with_params(params)
    rows = []
    for p in points:
        metrics = tuned.analyze(p.rate_rps, Workload(p.in_tokens, p.out_tokens), N, Q)
        rows.append([metrics.ttft_ms / p.ttft_ms - 1, metrics.itl_ms / p.itl_ms - 1])
    return np.abs(np.array(rows))


def run(
    tuner: EKFTuner,
    truth: Callable[[int], Sequence[Point]],
    cycles: int,
    seed: int,
    corrupt: Callable[[int, list[Observation]], list[Observation]] | None = None,
) -> tuple[list[float], list[TuneReport]]:
    """Run ``cycles`` cycles; the worst relative error over the grid after each one, and the reports."""
    rng = np.random.default_rng(seed)
    model = make_queue_model("iteration", PARAMS["design-example"])
    worst, reports = [], []
    for cycle in range(cycles):
        observations = cycle_observations(truth(cycle), cycle, rng)
        reports.append(tuner.update(corrupt(cycle, observations) if corrupt else observations))
        estimate = tuner.estimates().get(KEY)
        worst.append(float(errors(model, estimate, truth(cycle)).max()) if estimate else np.inf)
    return worst, reports


@pytest.mark.parametrize("name", PARAMS)
def test_estimates_predict_within_5_percent_after_10_cycles(name: str) -> None:
    """From the 10th to the 30th cycle the worst error over the grid is <= 5% in 3 of 4 runs, <= 7% in all.

    Measured over 20 seeds per parameter set: 80%, 90% and 95% of the runs stay within 5% from the
    10th cycle on (median of the worst error 2.8-3.2%); the others peak at 5.1-6.4% at a 70%-load
    point for a few cycles. A batch least-squares fit of the same observations errs as much: it is
    the 5% noise on a weakly determined gamma, not the filter.
    """
    truth = make_queue_model("iteration", PARAMS[name])
    points = model_grid(truth, truth)
    worst_after_10 = []
    for seed in range(4):
        worst, reports = run(EKFTuner(), lambda _: points, 30, seed=seed)
        worst_after_10.append(max(worst[9:]))
        final = reports[-1].key(*KEY)
        assert final is not None and final.phase == "tracking" and final.tuned and final.identifiable
        assert final.counters.fits == 1 and final.counters.rejected <= 0.1 * final.counters.updates
    assert max(worst_after_10) <= 0.07 and sorted(worst_after_10)[2] <= 0.05, worst_after_10


def test_an_outlier_burst_is_rejected_by_the_nis_gate() -> None:
    """Two cycles of every replica reporting 4x TTFT and 2.5x ITL are rejected; estimates do not move."""
    truth = make_queue_model("iteration", PARAMS["8b-1xh100"])
    points = model_grid(truth, truth)
    burst = (15, 16)

    def corrupt(cycle: int, observations: list[Observation]) -> list[Observation]:
        if cycle not in burst:
            return observations
        return [
            Observation(*KEY, o.rate_rps, o.in_tokens, o.out_tokens, N, Q, 4 * o.ttft_ms, 2.5 * o.itl_ms)
            for o in observations
        ]

    tuner = EKFTuner()
    worst, reports = run(tuner, lambda _: points, 25, seed=3, corrupt=corrupt)
    before, during, after = reports[14].key(*KEY), [reports[c].key(*KEY) for c in burst], reports[-1].key(*KEY)
    assert before is not None and after is not None
    for report in during:
        assert report is not None and report.count("rejected") == REPLICAS
        assert all(o.nis is not None and o.nis >= 7.378 and "outlier" in o.reason for o in report.outcomes)
        assert report.params == before.params
    assert after.counters.fits == 1 and after.counters.rejected >= 2 * REPLICAS
    assert max(worst[17:]) <= max(0.05, max(worst[9:15])), [round(w, 3) for w in worst]


@pytest.mark.parametrize("name", PARAMS)
def test_a_slower_version_is_tracked_within_10_cycles(name: str) -> None:
    """alpha x1.3 and beta x1.2 at cycle 15: from the 10th cycle after it, predictions are within 5% again."""
    before = make_queue_model("iteration", PARAMS[name])
    after = before.with_params({"alpha": 1.3 * before.params["alpha"], "beta": 1.2 * before.params["beta"]})
    grids = (model_grid(before, after), model_grid(after, after))  # loads are shares of the slower capacity
    tuner = EKFTuner()
    worst, reports = run(tuner, lambda cycle: grids[cycle >= 15], 40, seed=11)
    assert max(worst[9:15]) <= 0.05 and worst[15] > 0.2, [round(w, 3) for w in worst]
    assert max(worst[15 + 9 :]) <= 0.05, [round(w, 3) for w in worst]
    assert any("refitted" in note for r in reports[15:] for k in r.keys for note in k.notes)
    final = reports[-1].key(*KEY)
    assert final is not None and final.counters.fits == 2


def test_a_faster_version_is_tracked_within_10_cycles() -> None:
    """alpha x0.8 and beta x0.9 at cycle 15 (a faster version) are tracked within 10 cycles too."""
    before = make_queue_model("iteration", PARAMS["70b-2xh100"])
    after = before.with_params({"alpha": 0.8 * before.params["alpha"], "beta": 0.9 * before.params["beta"]})
    grids = (model_grid(before, before), model_grid(after, before))
    worst, _ = run(EKFTuner(), lambda cycle: grids[cycle >= 15], 40, seed=11)
    assert max(worst[15 + 9 :]) <= 0.05, [round(w, 3) for w in worst]


# --- against the discrete-event simulator -------------------------------------------------------


@pytest.fixture(scope="module")
def simulated() -> dict[str, list[Point]]:
    """The grid's mean TTFT and ITL from the simulator, once per parameter set (4,000 Poisson requests each)."""
    grids = {}
    for name, params in PARAMS.items():
        model = make_queue_model("iteration", params)
        engine = EngineConfig(**params, max_num_seqs=N)
        points = []
        for (big_l, big_k), load in itertools.product(MIXES, LOADS):
            rate = load * model.max_rate_rps(Workload(big_l, big_k), N, Q)
            result = simulate(
                engine,
                in_tokens=Lengths(big_l, "constant"),
                out_tokens=Lengths(big_k, "exponential"),
                rate_rps=rate,
                requests=4000,
                seed=3,
            )
            points.append(Point(rate, big_l, big_k, result.ttft.mean, result.itl.mean))
        grids[name] = points
    return grids


@pytest.mark.parametrize("name", PARAMS)
def test_against_the_simulator_the_tuner_reaches_the_models_floor(name: str, simulated: dict[str, list[Point]]) -> None:
    """Against simulated replicas, after 10 cycles: mean ITL error <= 5%, mean TTFT error at the model's floor.

    The floor is the best the ``iteration`` model can do: its least-squares fit to the noise-free
    simulated means. The 5%-everywhere figure of the issue is out of reach for TTFT with this queue
    model; the figures measured here are in docs/tuner.md.
    """
    points = simulated[name]
    model = make_queue_model("iteration", PARAMS[name])
    exact = [Observation(*KEY, p.rate_rps, p.in_tokens, p.out_tokens, N, Q, p.ttft_ms, p.itl_ms) for p in points]
    best = fit(model, exact, np.array(list(PARAMS[name].values())), max_evaluations=1500, max_condition=1e9, step=0.01)
    floor = errors(model, dict(zip(model.param_names, best.x, strict=True)), points).mean(axis=0)
    configured = errors(model, PARAMS[name], points).mean(axis=0)
    tuner = EKFTuner()
    rng = np.random.default_rng(5)
    for cycle in range(30):
        tuner.update(cycle_observations(points, cycle, rng))
        if cycle < 9:
            continue
        ttft, itl = errors(model, tuner.estimates()[KEY], points).mean(axis=0)
        assert ttft <= floor[0] + 0.015, (cycle, ttft, floor[0], configured[0])
        assert itl <= 0.05, (cycle, itl)
