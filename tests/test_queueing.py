"""Tests of the queue models, SLO sizing and the max batch choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferno.errors import ConfigError, ModelError
from inferno.queueing import (
    BATCH_POLICIES,
    DEFAULT_QUEUE_MODEL,
    QUEUE_MODELS,
    IterationQueue,
    LinearQueue,
    MM1KQueue,
    Targets,
    Workload,
    choose_batch,
    make_queue_model,
    params_from_perf,
    size,
)
from inferno.queueing.chain import solve
from inferno.queueing.iteration import chunks
from inferno.spec import ModelAcceleratorPerfData

EXAMPLE = {"alpha": 12.0, "beta": 0.05, "gamma": 0.0005}
"""The public numeric example of design section 4."""

PARAMS = {
    "iteration": EXAMPLE,
    "mm1k": EXAMPLE,
    "inferno-2025": {"alpha": 20.58, "beta": 0.41, "gamma": 200.0, "delta": 0.01},
}


def test_public_example_is_reproduced() -> None:
    """Optimal concurrency with ceiling 48 gives N 48 and the published throughput, TTFT, ITL and max rate."""
    model = make_queue_model("iteration", EXAMPLE)
    workload, targets = Workload(128, 512), Targets(ttft_ms=60, itl_ms=20)
    n, q = choose_batch(model, workload, targets, "optimal", max_batch_size=48, at_tokens=512, max_queue=128)
    assert (n, q) == (48, 128)
    sizing = size(model, workload, targets, n, q)
    assert sizing.feasible and sizing.binding == "ttft" and sizing.metrics is not None
    assert sizing.metrics.throughput_rps == pytest.approx(2.9494622, rel=1e-4)
    assert sizing.metrics.ttft_ms == pytest.approx(60.000584, rel=1e-4)
    assert sizing.metrics.itl_ms == pytest.approx(19.90533, rel=1e-4)
    assert sizing.metrics.max_rate_rps == pytest.approx(3.8609295, rel=1e-4)


def test_catalog_names_and_default() -> None:
    """The three models are registered under their names; iteration is the default."""
    assert set(QUEUE_MODELS) == {"mm1k", "inferno-2025", "iteration"}
    assert DEFAULT_QUEUE_MODEL == "iteration"
    for name, params in PARAMS.items():
        model = make_queue_model(name, params)
        assert model.name == name
        assert model.params == params
        assert tuple(model.params) == model.param_names


def test_unknown_queue_model_lists_the_names() -> None:
    """An unknown name is a ConfigError naming every valid model."""
    with pytest.raises(ConfigError, match="mm1k, inferno-2025, iteration"):
        make_queue_model("mm2", EXAMPLE)
    row = ModelAcceleratorPerfData.model_validate(
        {"name": "m", "acc": "A", "maxBatchSize": 8, "atTokens": 8, "perfParms": EXAMPLE}
    )
    with pytest.raises(ConfigError, match="unknown queue model"):
        params_from_perf("mm2", row)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alpha": -1.0, "beta": 0.05, "gamma": 0.0005}, "alpha must be > 0"),
        ({"alpha": 0.0, "beta": 0.05, "gamma": 0.0005}, "alpha must be > 0"),
        ({"alpha": 12.0, "beta": 0.0, "gamma": 0.0005}, "beta must be > 0"),
        ({"alpha": 12.0, "beta": math.nan, "gamma": 0.0005}, "beta must be a finite number"),
        ({"alpha": 12.0, "beta": 0.05, "gamma": math.inf}, "gamma must be a finite number"),
        ({"alpha": 12.0, "beta": 0.05}, "missing gamma"),
        ({"alpha": 12.0, "beta": 0.05, "gamma": 0.0005, "delta": 1.0}, "unknown delta"),
        ({"alpha": "12", "beta": 0.05, "gamma": 0.0005}, "alpha must be a finite number"),
    ],
)
def test_bad_parameters_raise_model_error(params: dict[str, float], message: str) -> None:
    """Negative, zero, NaN, infinite, missing and unknown parameters are clear ModelErrors."""
    with pytest.raises(ModelError, match=message):
        make_queue_model("iteration", params)


def test_bad_parameters_are_rejected_by_every_model() -> None:
    """Each model refuses a zero parameter, also through with_params."""
    for name, params in PARAMS.items():
        with pytest.raises(ModelError, match="must be > 0"):
            make_queue_model(name, {**params, "alpha": 0.0})
        with pytest.raises(ModelError, match="must be > 0"):
            make_queue_model(name, params).with_params({"beta": -0.1})
        with pytest.raises(ModelError, match="unknown"):
            make_queue_model(name, params).with_params({"theta": 1.0})


@pytest.mark.parametrize(
    ("rate", "workload", "max_batch", "max_queue", "message"),
    [
        (1.0, Workload(128, 512), 0, 10, "max_batch must be an integer >= 1"),
        (1.0, Workload(128, 512), 8, -1, "max_queue must be an integer >= 0"),
        (1.0, Workload(128, 512), 2.5, 10, "max_batch must be an integer"),
        (0.0, Workload(128, 512), 8, 10, "rate_rps must be > 0"),
        (math.nan, Workload(128, 512), 8, 10, "rate_rps must be a finite number"),
    ],
)
def test_bad_operating_points_raise_model_error(
    rate: float, workload: Workload, max_batch: int, max_queue: int, message: str
) -> None:
    """N < 1, Q < 0, a fractional N and a zero or NaN rate are ModelErrors."""
    for name, params in PARAMS.items():
        with pytest.raises(ModelError, match=message):
            make_queue_model(name, params).analyze(rate, workload, max_batch, max_queue)


def test_bad_workloads_and_targets_raise_model_error() -> None:
    """Fewer than one output token, negative or NaN lengths and negative targets are refused."""
    for args in ((128, 0.5), (-1, 512), (math.nan, 512)):
        with pytest.raises(ModelError):
            Workload(*args)
    with pytest.raises(ModelError, match="target itl_ms"):
        Targets(itl_ms=-5)


def test_tiny_parameters_fail_cleanly() -> None:
    """Parameters too small to give a representable service time are a ModelError, not a hang."""
    model = make_queue_model("inferno-2025", {"alpha": 1e-320, "beta": 1e-320, "gamma": 1e-320, "delta": 1e-320})
    with pytest.raises(ModelError, match="service rate"):
        model.analyze(1.0, Workload(0, 2), 4, 4)


@pytest.mark.parametrize(("max_batch", "max_queue"), [(96, 4000), (4096, 0), (1, 4095)])
@pytest.mark.parametrize("load", [1e-6, 0.5, 0.999, 3.0])
def test_large_state_spaces_do_not_overflow(max_batch: int, max_queue: int, load: float) -> None:
    """N + Q = 4096 gives finite metrics at any load, throughput never above the offered rate."""
    for name, params in PARAMS.items():
        model = make_queue_model(name, params)
        workload = Workload(128, 512)
        rate = load * model.max_rate_rps(workload, max_batch, max_queue)
        metrics = model.analyze(rate, workload, max_batch, max_queue)
        values = list(metrics.to_dict().values())
        assert all(math.isfinite(v) and v >= 0 for v in values), (name, metrics)
        assert metrics.throughput_rps <= metrics.rate_rps * (1 + 1e-12)
        assert 0 <= metrics.in_service <= max_batch * (1 + 1e-12)
        if load > 1 and max_queue > 0:
            assert metrics.utilisation == pytest.approx(1.0, abs=1e-6)
            assert metrics.throughput_rps == pytest.approx(metrics.max_rate_rps / 0.999, rel=1e-3)


def test_chain_matches_mm1k_closed_form() -> None:
    """With a constant service rate the chain is M/M/1/K: its mean number in system has a closed form."""
    mu, lam, kmax = 0.01, 0.008, 40
    chain = solve(np.full(1, mu), lam, kmax - 1)
    rho = lam / mu
    expected = rho / (1 - rho) - (kmax + 1) * rho ** (kmax + 1) / (1 - rho ** (kmax + 1))
    assert chain.in_system == pytest.approx(expected, rel=1e-12)
    blocked = (1 - rho) * rho**kmax / (1 - rho ** (kmax + 1))
    assert chain.throughput == pytest.approx(lam * (1 - blocked), rel=1e-12)
    assert chain.wait == pytest.approx(chain.response - chain.service, rel=1e-9)


def test_inferno_2025_single_slot_is_exact() -> None:
    """With N = 1 the 2025 model's effective batch is 1: ITL = alpha + beta, TTFT = gamma + delta L (no wait)."""
    model = LinearQueue(alpha=20.0, beta=0.5, gamma=100.0, delta=0.01)
    workload = Workload(300, 200)
    metrics = model.analyze(0.05, workload, 1, 0)
    assert metrics.itl_ms == pytest.approx(20.5, rel=1e-9)
    assert metrics.ttft_ms == pytest.approx(103.0, rel=1e-9)
    service = 100.0 + 0.01 * 300 + 199 * 20.5
    assert metrics.max_rate_rps == pytest.approx(1000 / service * 0.999, rel=1e-12)


def test_inferno_2025_service_times() -> None:
    """S(n) = gamma + delta L n + (K - 1)(alpha + beta n); decode-only one-token requests decode once."""
    model = LinearQueue(alpha=20.0, beta=0.5, gamma=100.0, delta=0.01)
    n = 8
    service = 100.0 + 0.01 * 300 * n + 199 * (20.0 + 0.5 * n)
    assert model.max_rate_rps(Workload(300, 200), n, 0) == pytest.approx(n / service * 999, rel=1e-12)
    assert model.max_rate_rps(Workload(0, 1), n, 0) == pytest.approx(n / (20.0 + 0.5 * n) * 999, rel=1e-12)
    assert model.prefill_at(3, Workload(0, 1)) == 0.0
    assert model.itl_at(3, Workload(0, 1)) == 21.5


def test_chunks_match_their_definition() -> None:
    """nc(B) is the smallest m >= 1 with floor(max(0, (m + K)(M - L/m)/(L + K))) >= B."""
    for big_l, big_k, big_m in ((128, 512, 8192), (8000, 100, 8192), (20000, 50, 2048), (0, 10, 16), (3, 1, 1)):
        workload = Workload(big_l, big_k)
        batch = np.arange(1, 300, dtype=np.int64)
        found = chunks(batch, workload, big_m)
        for b, m in zip(batch, found, strict=True):
            expected = next(
                m
                for m in range(1, 10**6)
                if math.floor(max(0.0, (m + big_k) * (big_m - big_l / m) / (big_l + big_k))) >= b
            )
            assert m == expected, (big_l, big_k, big_m, b)


def test_iteration_closed_forms() -> None:
    """itl(B) and prefill(B) follow the design's formulas with one chunk."""
    model = IterationQueue(**EXAMPLE)
    workload = Workload(128, 512)
    w_prefill = (0.05 + 0.0005) * 128
    w_decode = 0.05 * 512 + 0.0005 * 512 * (128 + 256.5)
    delta = (w_prefill + w_decode) / 513
    assert model.itl_at(10, workload) == pytest.approx(12 + 9 * delta + 0.05 + 0.0005 * (128 + 256.5))
    assert model.prefill_at(10, workload) == pytest.approx(12 + 9 * delta + w_prefill)
    assert model.max_rate_rps(workload, 48, 0) == pytest.approx(48 / (513 * (12 + 48 * delta)) * 999)


def test_with_params_keeps_the_kind_and_token_budget() -> None:
    """with_params returns a new model of the same kind with the new values and the same M."""
    model = make_queue_model("iteration", EXAMPLE, max_batched_tokens=2048)
    tuned = model.with_params({"gamma": 0.001})
    assert isinstance(tuned, IterationQueue) and tuned.max_batched_tokens == 2048
    assert tuned.params == {**EXAMPLE, "gamma": 0.001}
    assert model.params == EXAMPLE
    assert isinstance(make_queue_model("mm1k", EXAMPLE).with_params({"alpha": 3.0}), MM1KQueue)


def test_params_from_perf_picks_the_form() -> None:
    """2025 rows feed inferno-2025; 2026 rows feed iteration and mm1k; a missing form is a ModelError."""
    both = ModelAcceleratorPerfData.model_validate(
        {
            "name": "m",
            "acc": "A",
            "maxBatchSize": 8,
            "atTokens": 8,
            "decodeParms": {"alpha": 1, "beta": 2},
            "prefillParms": {"gamma": 3, "delta": 4},
            "perfParms": EXAMPLE,
        }
    )
    assert params_from_perf("inferno-2025", both) == {"alpha": 1, "beta": 2, "gamma": 3, "delta": 4}
    assert params_from_perf("iteration", both) == EXAMPLE
    assert params_from_perf("mm1k", both) == EXAMPLE
    only_2025 = both.model_copy(update={"perf_parms": None})
    with pytest.raises(ModelError, match="needs perfParms"):
        params_from_perf("iteration", only_2025)
    only_2026 = both.model_copy(update={"decode_parms": None, "prefill_parms": None})
    with pytest.raises(ModelError, match="needs decodeParms and prefillParms"):
        params_from_perf("inferno-2025", only_2026)


def test_sizing_infeasible_is_not_the_same_as_not_binding() -> None:
    """A target below the value at the lowest load is infeasible; one above the value at lambda_max does not bind."""
    model = make_queue_model("iteration", EXAMPLE)
    workload = Workload(128, 512)
    low_itl = model.analyze(0.01, workload, 48, 480).itl_ms
    infeasible = size(model, workload, Targets(itl_ms=low_itl * 0.9), 48, 480)
    assert not infeasible.feasible and infeasible.rate_rps == 0 and infeasible.metrics is None
    assert infeasible.binding == "itl" and "below" in infeasible.reason
    loose = size(model, workload, Targets(ttft_ms=1e9, itl_ms=1e9), 48, 480)
    assert loose.feasible and loose.binding is None
    assert loose.rate_rps == pytest.approx(model.max_rate_rps(workload, 48, 480), rel=1e-12)
    assert "does not bind" in loose.reason


def test_sizing_without_targets_and_with_tokens_per_second() -> None:
    """No target gives lambda_max; a tokens/s target gives 0.9 lambda_max and binds."""
    model = make_queue_model("iteration", EXAMPLE)
    workload = Workload(128, 512)
    high = model.max_rate_rps(workload, 32, 320)
    none = size(model, workload, Targets(), 32, 320)
    assert (none.rate_rps, none.binding, none.feasible) == (high, None, True)
    tps = size(model, workload, Targets(tps=100, itl_ms=1e9), 32, 320)
    assert tps.binding == "tps" and tps.rate_rps == pytest.approx(0.9 * high, rel=1e-12)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_sized_rate_meets_the_targets_tightly(name: str) -> None:
    """At the sized rate the binding metric is within 1e-4 of its target and the other meets its own."""
    model = make_queue_model(name, PARAMS[name])
    workload = Workload(128, 512)
    lows = model.analyze(0.05 * model.max_rate_rps(workload, 64, 640), workload, 64, 640)
    targets = Targets(ttft_ms=lows.ttft_ms * 2, itl_ms=lows.itl_ms * 1.3)
    sizing = size(model, workload, targets, 64, 640)
    assert sizing.feasible and sizing.metrics is not None and sizing.binding in ("ttft", "itl")
    assert sizing.metrics.ttft_ms <= targets.ttft_ms * (1 + 1e-4)
    assert sizing.metrics.itl_ms <= targets.itl_ms * (1 + 1e-4)
    bound = targets.ttft_ms if sizing.binding == "ttft" else targets.itl_ms
    assert getattr(sizing.metrics, f"{sizing.binding}_ms") == pytest.approx(bound, rel=1e-4)


def test_reference_batch_policy() -> None:
    """N = floor(maxBatchSize * atTokens / K) (at least 1), an override wins, Q = 10 N unless given."""
    model = make_queue_model("iteration", EXAMPLE)
    targets = Targets(ttft_ms=1000, itl_ms=50)
    assert choose_batch(model, Workload(128, 300), targets, "reference", max_batch_size=64, at_tokens=512) == (
        109,
        1090,
    )
    assert choose_batch(model, Workload(128, 1e5), targets, "reference", max_batch_size=64, at_tokens=512) == (1, 10)
    got = choose_batch(model, Workload(128, 300), targets, "reference", max_batch_size=64, at_tokens=512, override=7)
    assert got == (7, 70)
    got = choose_batch(model, Workload(128, 300), targets, "reference", max_batch_size=64, at_tokens=512, max_queue=5)
    assert got == (109, 5)


def test_unknown_batch_policy_is_a_config_error() -> None:
    """An unknown policy names the valid ones."""
    assert BATCH_POLICIES == ("reference", "optimal")
    with pytest.raises(ConfigError, match="reference, optimal"):
        choose_batch(
            make_queue_model("iteration", EXAMPLE), Workload(1, 1), Targets(), "best", max_batch_size=8, at_tokens=8
        )


def test_optimal_batch_stays_in_range_for_any_targets() -> None:
    """The optimal policy returns 1 <= N <= ceiling for ITL-only, TPS-only, infeasible and no targets."""
    model = make_queue_model("iteration", EXAMPLE)
    workload = Workload(128, 512)
    for targets in (Targets(itl_ms=15), Targets(tps=500), Targets(itl_ms=1), Targets()):
        n, q = choose_batch(model, workload, targets, "optimal", max_batch_size=256, at_tokens=512, override=100)
        assert 1 <= n <= 100 and q == 10 * n
    n, _ = choose_batch(model, workload, Targets(itl_ms=1), "optimal", max_batch_size=256, at_tokens=512)
    assert n == 1


def _term_by_term(mu: np.ndarray, rate: float, q: int) -> tuple[float, float, float]:
    """(throughput, mean in system, mean queued) of the chain summed over every state (the slow way)."""
    n = len(mu)
    log_ratio = np.concatenate([np.log(rate) - np.log(mu), np.full(q, np.log(rate) - np.log(mu[-1]))])
    log_p = np.concatenate([[0.0], np.cumsum(log_ratio)])
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    states = np.arange(n + q + 1)
    return rate * (1 - p[-1]), float(p @ states), float(p[n + 1 :] @ (states[n + 1 :] - n))


@pytest.mark.parametrize("q", [0, 1, 7, 640, 20000])
@pytest.mark.parametrize("x", [0.01, 0.5, 0.999, 1.0, 1.0 + 1e-9, 1.001, 3.0])
def test_closed_form_queue_states_match_summing_every_state(q: int, x: float) -> None:
    """The geometric-tail solution equals the sum over all N + Q states, also at lambda = mu(N) and in overload."""
    mu = 0.01 * np.cumprod(np.full(64, 1.03))
    chain = solve(mu, x * mu[-1], q)
    throughput, in_system, queued = _term_by_term(mu, x * mu[-1], q)
    assert chain.throughput == pytest.approx(throughput, rel=1e-9)
    assert chain.in_system == pytest.approx(in_system, rel=1e-9)
    assert chain.wait * chain.throughput == pytest.approx(queued, rel=1e-8, abs=1e-12)
