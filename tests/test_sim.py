"""Tests of the discrete-event simulator of a vLLM replica."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inferno.errors import ConfigError, ModelError
from inferno.queueing import Workload, make_queue_model
from inferno.sim import EngineConfig, Lengths, Replica, RequestRecord, simulate

ENGINE = EngineConfig(alpha=10.0, beta=0.1, gamma=0.01, max_num_seqs=4)


def _run_alone(engine: EngineConfig, in_tokens: int, out_tokens: int) -> RequestRecord:
    """The record of one request through an empty replica."""
    replica = Replica(engine)
    replica.submit(0.0, in_tokens, out_tokens)
    (record,) = replica.advance_to(math.inf)
    return record


def test_lone_request_times_are_exact() -> None:
    """Alone, TTFT is one prefill iteration and each decode reads the prompt plus the tokens so far."""
    record = _run_alone(ENGINE, 100, 5)
    assert record.ttft_ms == pytest.approx(10 + 0.1 * 100 + 0.01 * 100)
    decodes = [10 + 0.1 + 0.01 * (100 + g) for g in range(1, 5)]
    assert record.finish_ms == pytest.approx(21 + sum(decodes))
    assert record.itl_ms == pytest.approx(sum(decodes) / 4)
    assert (record.queue_ms, record.in_tokens, record.out_tokens) == (0.0, 100, 5)


def test_prompts_are_chunked_by_the_token_budget() -> None:
    """A prompt longer than M takes several iterations, each reading the KV cache up to its chunk."""
    engine = EngineConfig(alpha=10.0, beta=0.1, gamma=0.01, max_num_seqs=4, max_batched_tokens=64)
    record = _run_alone(engine, 150, 2)
    chunks = [10 + 0.1 * 64 + 0.01 * 64, 10 + 0.1 * 64 + 0.01 * 128, 10 + 0.1 * 22 + 0.01 * 150]
    assert record.ttft_ms == pytest.approx(sum(chunks))
    assert record.e2e_ms == pytest.approx(sum(chunks) + 10 + 0.1 + 0.01 * 151)


def test_one_token_requests_finish_at_their_prefill() -> None:
    """K = 1: the first token is the last, and the ITL is 0."""
    record = _run_alone(ENGINE, 20, 1)
    assert record.finish_ms == record.first_token_ms == pytest.approx(10 + 2 + 0.2)
    assert record.itl_ms == 0.0


def test_token_budget_limits_admission() -> None:
    """Decodes come first, then the partial prefill, then new requests while budget is left."""
    engine = EngineConfig(alpha=10.0, beta=0.1, gamma=0.01, max_num_seqs=8, max_batched_tokens=100)
    replica = Replica(engine)
    for _ in range(3):
        replica.submit(0.0, 60, 3)
    first = 10 + 0.1 * 100 + 0.01 * (60 + 40)
    records = {r.id: r for r in replica.advance_to(math.inf)}
    assert records[0].scheduled_ms == records[1].scheduled_ms == 0.0
    assert records[2].scheduled_ms == pytest.approx(first)
    assert records[0].first_token_ms == pytest.approx(first)
    assert records[1].first_token_ms == records[2].first_token_ms > first


def test_max_num_seqs_caps_the_batch_and_order_is_fcfs() -> None:
    """Never more than max_num_seqs run; requests are scheduled in arrival order."""
    replica = Replica(EngineConfig(alpha=5.0, beta=0.05, gamma=0.001, max_num_seqs=3))
    for i in range(10):
        replica.submit(i * 2.0, 10, 40)
    records: list[RequestRecord] = []
    t = 0.0
    while len(records) < 10:
        t += 5.0
        records += replica.advance_to(t)
        assert replica.num_running <= 3
        assert all(r.finish_ms <= t for r in records)
    ordered = sorted(records, key=lambda r: r.id)
    assert [r.scheduled_ms for r in ordered] == sorted(r.scheduled_ms for r in ordered)
    assert sum(r.queue_ms > 0 for r in ordered) >= 6
    assert replica.num_waiting == 0 and replica.generation_tokens == 400 and replica.prompt_tokens == 100


def test_stepping_in_any_increments_gives_the_same_run() -> None:
    """One long advance, an advance per arrival and small fixed steps produce the same records."""
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(40.0, 300))
    prompts = rng.integers(1, 400, 300)
    outputs = rng.geometric(1 / 60, 300)
    engine = EngineConfig(alpha=8.0, beta=0.05, gamma=0.002, max_num_seqs=8, max_batched_tokens=256)

    def run(step: float | None) -> list[RequestRecord]:
        replica, done = Replica(engine), []
        for a, p, k in zip(arrivals, prompts, outputs, strict=True):
            if step is not None:
                while replica.now_ms + step < a:
                    done += replica.advance_to(replica.now_ms + step)
                done += replica.advance_to(float(a))
            replica.submit(float(a), int(p), int(k))
        return sorted(done + replica.advance_to(math.inf), key=lambda r: r.id)

    once, per_arrival, small = run(None), run(math.inf), run(3.7)
    assert len(once) == 300
    for other in (per_arrival, small):
        for a, b in zip(once, other, strict=True):
            assert (a.id, a.in_tokens, a.out_tokens) == (b.id, b.in_tokens, b.out_tokens)
            for field in ("scheduled_ms", "first_token_ms", "finish_ms"):
                assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9)


def test_queue_bound_rejects_arrivals() -> None:
    """With max_queue set, arrivals finding the waiting queue full are turned away."""
    replica = Replica(EngineConfig(alpha=5.0, beta=0.05, gamma=0.001, max_num_seqs=1, max_queue=2))
    ids = []
    for _ in range(5):
        replica.advance_to(0.0)
        ids.append(replica.submit(0.0, 10, 10))
    assert ids == [0, 1, 2, None, None]
    assert replica.rejected == 2
    assert len(replica.advance_to(math.inf)) == 3


def test_misuse_is_refused() -> None:
    """Arrivals in the past, time going back and empty requests are errors; so are bad engine settings."""
    replica = Replica(ENGINE)
    replica.advance_to(10.0)
    with pytest.raises(ValueError, match="before the replica time"):
        replica.submit(5.0, 10, 10)
    with pytest.raises(ValueError, match="back in time"):
        replica.advance_to(1.0)
    with pytest.raises(ValueError, match="at least 1 input"):
        replica.submit(20.0, 0, 10)
    for kwargs, message in (
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"gamma": math.nan}, "gamma must be a finite number"),
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"max_batched_tokens": 2}, "max_batched_tokens"),
        ({"max_queue": -1}, "max_queue"),
    ):
        with pytest.raises(ModelError, match=message):
            EngineConfig(**{"alpha": 1.0, "beta": 0.1, "gamma": 0.01, "max_num_seqs": 4, **kwargs})  # type: ignore[arg-type]


def test_lengths_have_their_means() -> None:
    """Constant, geometric and lognormal draws are integers >= 1 with the asked mean; the cap holds."""
    rng = np.random.default_rng(0)
    assert set(Lengths(100, "constant").sample(rng, 10)) == {100}
    for kind, tolerance in (("exponential", 0.02), ("lognormal", 0.03)):
        draws = Lengths(200, kind).sample(rng, 200_000)
        assert draws.min() >= 1 and draws.dtype == np.int64
        assert draws.mean() == pytest.approx(200, rel=tolerance)
    assert Lengths(200, "lognormal", sigma=2.0, maximum=500).sample(rng, 10_000).max() == 500
    with pytest.raises(ConfigError, match="constant, exponential, lognormal"):
        Lengths(10, "pareto")
    with pytest.raises(ModelError, match=">= 1"):
        Lengths(0.5)


def test_simulate_is_seeded_and_checks_its_input() -> None:
    """The same seed gives the same figures, another seed other ones; bad input is a ModelError."""
    run = {"in_tokens": Lengths(64, "constant"), "out_tokens": Lengths(32), "rate_rps": 20.0, "requests": 500}
    assert simulate(ENGINE, seed=1, **run) == simulate(ENGINE, seed=1, **run)  # type: ignore[arg-type]
    assert simulate(ENGINE, seed=1, **run) != simulate(ENGINE, seed=2, **run)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="either rate_rps"):
        simulate(ENGINE, in_tokens=Lengths(8), out_tokens=Lengths(8))
    with pytest.raises(ModelError, match="increasing order"):
        simulate(ENGINE, in_tokens=Lengths(8), out_tokens=Lengths(8), arrivals_ms=[5.0, 1.0, 2.0])
    with pytest.raises(ModelError, match="warmup"):
        simulate(ENGINE, in_tokens=Lengths(8), out_tokens=Lengths(8), rate_rps=1.0, warmup=0.6, cooldown=0.5)


def test_trace_arrivals() -> None:
    """A trace of arrival times is replayed; the offered rate is the trace's."""
    arrivals = np.arange(2000) * 1000.0
    result = simulate(
        ENGINE, in_tokens=Lengths(50, "constant"), out_tokens=Lengths(20, "constant"), arrivals_ms=arrivals
    )
    assert result.requests == 1600 and result.rejected == 0
    assert result.rate_rps == pytest.approx(1.0)
    lone = _run_alone(ENGINE, 50, 20)
    assert result.ttft.p50 == pytest.approx(lone.ttft_ms) and result.itl.mean == pytest.approx(lone.itl_ms)


def test_light_load_sees_a_lone_request() -> None:
    """At very low load TTFT is the prefill time and ITL the single-request iteration time."""
    lone = _run_alone(ENGINE, 200, 64)
    result = simulate(
        ENGINE, in_tokens=Lengths(200, "constant"), out_tokens=Lengths(64, "constant"), rate_rps=0.05, requests=400
    )
    assert result.ttft.mean == pytest.approx(lone.ttft_ms, rel=0.02)
    assert result.itl.mean == pytest.approx(lone.itl_ms, rel=0.02)
    assert result.in_service == pytest.approx(0.05 * lone.e2e_ms / 1000, rel=0.1)


def test_littles_law_and_throughput_hold() -> None:
    """Mean batch = throughput x mean time in the batch, and throughput = offered rate, below capacity."""
    engine = EngineConfig(alpha=7.0, beta=0.06, gamma=4e-5, max_num_seqs=32)
    result = simulate(engine, in_tokens=Lengths(256, "constant"), out_tokens=Lengths(256), rate_rps=6.0, requests=8000)
    assert result.throughput_rps == pytest.approx(result.rate_rps, rel=0.05)
    in_batch_ms = result.e2e.mean - result.queue.mean
    assert result.in_service == pytest.approx(result.throughput_rps * in_batch_ms / 1000, rel=0.05)
    assert result.ttft.p50 <= result.ttft.p90 <= result.ttft.p99
    assert result.itl.p50 <= result.itl.p90 <= result.itl.p99


def test_simulator_and_iteration_model_agree_on_constant_lengths() -> None:
    """With fixed lengths at half load the iteration model's ITL and mean batch are within 5% of the simulator's."""
    params = {"alpha": 7.0, "beta": 0.06, "gamma": 4e-5}
    model, workload = make_queue_model("iteration", params), Workload(256, 256)
    rate = 0.5 * model.max_rate_rps(workload, 32, 320)
    result = simulate(
        EngineConfig(**params, max_num_seqs=32),
        in_tokens=Lengths(256, "constant"),
        out_tokens=Lengths(256, "constant"),
        rate_rps=rate,
        requests=6000,
    )
    metrics = model.analyze(rate, workload, 32, 320)
    assert metrics.itl_ms == pytest.approx(result.itl.mean, rel=0.05)
    assert metrics.in_service == pytest.approx(result.in_service, rel=0.05)


def test_next_event_lets_a_driver_see_every_first_token_and_finish_on_time() -> None:
    """Advancing only to next_event_ms() and to arrivals, each first token and finish is seen at its exact time."""
    engine = EngineConfig(alpha=5.0, beta=0.05, gamma=0.001, max_num_seqs=3, max_batched_tokens=64)
    rng = np.random.default_rng(4)
    n = 80
    arrivals, ins, outs = np.cumsum(rng.exponential(40.0, n)), rng.integers(1, 150, n), rng.integers(1, 40, n)
    reference = Replica(engine)
    for i in range(n):
        reference.submit(float(arrivals[i]), int(ins[i]), int(outs[i]))
    expected = {r.id: r for r in reference.advance_to(math.inf)}
    replica = Replica(engine)
    first_seen: dict[int, float] = {}
    finished: dict[int, float] = {}
    submitted, wakes = 0, 0
    while len(finished) < n:
        t = min(replica.next_event_ms(), float(arrivals[submitted]) if submitted < n else math.inf)
        wakes += 1
        finished |= {r.id: t for r in replica.advance_to(t)}
        while submitted < n and arrivals[submitted] <= t:
            replica.submit(float(arrivals[submitted]), int(ins[submitted]), int(outs[submitted]))
            submitted += 1
        first_seen |= {rid: t for rid in range(submitted) if rid not in first_seen and replica.generated(rid) > 0}
    assert finished == pytest.approx({rid: r.finish_ms for rid, r in expected.items()})
    decoded = {rid: r.first_token_ms for rid, r in expected.items() if r.out_tokens > 1}
    assert {rid: first_seen[rid] for rid in decoded} == pytest.approx(decoded)
    assert wakes < reference.iterations / 2, "decode-only stretches are skipped over"


def test_generated_tokens_and_kv_cache_follow_the_iterations() -> None:
    """A lone request: 0 tokens before its prefill ends, then one per iteration; the KV cache holds prompt + output."""
    replica = Replica(ENGINE)
    rid = replica.submit(0.0, 100, 5)
    assert rid is not None
    replica.advance_to(5.0)
    assert (replica.generated(rid), replica.kv_cache_tokens) == (0, 100)
    first = 10 + 0.1 * 100 + 0.01 * 100
    assert replica.next_event_ms() == pytest.approx(first)
    replica.advance_to(first)
    assert (replica.generated(rid), replica.kv_cache_tokens) == (1, 101)
    replica.advance_to(first + 2 * (10 + 0.1 + 0.01 * 102) + 1.0)
    assert replica.generated(rid) == 3
    (record,) = replica.advance_to(math.inf)
    assert replica.next_event_ms() == math.inf and record.out_tokens == 5
