"""Property tests of the queue models: latencies grow with the load, throughput never beats the offer."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from inferno.queueing import Workload, make_queue_model

FAST = settings(max_examples=200, deadline=None)

POINT = {
    "alpha": st.floats(1.0, 50.0),
    "beta": st.floats(1e-3, 0.5),
    "n": st.integers(1, 256),
    "q": st.integers(0, 2000),
    "loads": st.tuples(st.floats(1e-3, 1.3), st.floats(1e-3, 1.3)).map(sorted),
}
"""Strategies every model shares: decode parameters, N, Q and two loads (shares of lambda_max)."""


def _check_growth(name: str, params: dict[str, float], workload: Workload, n: int, q: int, loads: list[float]) -> None:
    """Wait, TTFT, ITL and mean batch do not fall from the lower load to the higher; throughput <= rate."""
    model = make_queue_model(name, params)
    high = model.max_rate_rps(workload, n, q)
    low_m, high_m = (model.analyze(f * high, workload, n, q) for f in loads)
    for field in ("wait_ms", "ttft_ms", "itl_ms", "in_service"):
        before, after = getattr(low_m, field), getattr(high_m, field)
        assert after >= before - 1e-9 * abs(before) - 1e-12, field
    for m in (low_m, high_m):
        assert m.throughput_rps <= m.rate_rps * (1 + 1e-12)


@FAST
@given(
    **POINT,
    gamma=st.floats(1.0, 500.0),
    delta=st.floats(1e-4, 0.1),
    in_tokens=st.integers(0, 8000),
    out_tokens=st.integers(1, 2000),
)
def test_inferno_2025_latencies_grow_with_rate(
    alpha: float, beta: float, gamma: float, delta: float, in_tokens: int, out_tokens: int, **point: object
) -> None:
    """inferno-2025: wait, TTFT and ITL never fall as the rate rises; throughput <= rate."""
    params = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta}
    _check_growth("inferno-2025", params, Workload(in_tokens, out_tokens), **point)  # type: ignore[arg-type]


@FAST
@given(
    **POINT,
    name=st.sampled_from(["iteration", "mm1k"]),
    gamma=st.floats(1e-6, 1e-3),
    in_tokens=st.integers(0, 4000),
    out_tokens=st.integers(16, 2000),
)
def test_iteration_latencies_grow_with_rate(
    name: str, alpha: float, beta: float, gamma: float, in_tokens: int, out_tokens: int, **point: object
) -> None:
    """iteration and mm1k: wait, TTFT and ITL never fall as the rate rises; throughput <= rate.

    The design's ITL = (Sbar - prefill) / K is not monotone everywhere: it dips by a fraction of
    alpha / K where the chunk count of the mean batch steps up, and for outputs of a few tokens near
    saturation. So prompts take one chunk at every batch size up to N (nc(N) = 1) and K >= 16.
    """
    n = point["n"]
    assert isinstance(n, int)
    assume(n >= 2 and (out_tokens + 1) * (8192 - in_tokens) / (in_tokens + out_tokens) >= n)
    params = {"alpha": alpha, "beta": beta, "gamma": gamma}
    _check_growth(name, params, Workload(in_tokens, out_tokens), **point)  # type: ignore[arg-type]
