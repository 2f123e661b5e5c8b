"""SLO sizing of a replica and the choice of its max batch size (design section 4).

``size`` finds the highest request rate one replica sustains while meeting mean TTFT, mean ITL and
tokens/s targets; ``choose_batch`` picks the max batch (vLLM ``--max-num-seqs``) and queue bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy.optimize import brentq

from inferno.errors import ConfigError, ModelError
from inferno.queueing.chain import EPSILON
from inferno.queueing.contract import QueueMetrics, QueueModel, Sizing, Targets, Workload, check_point

REL_TOL = 1e-6
"""The root search stops when the rate is known to this relative precision."""

MAX_ITERATIONS = 100
"""The root search gives up after this many evaluations (the bracket is already tiny by then)."""

TPS_FRACTION = 0.9
"""A tokens/s target is met at this share of lambda_max (headroom for stability, reference value)."""

BATCH_POLICIES = ("reference", "optimal")
"""Max batch policies: the reference heuristic and the optimal-concurrency search."""

ONSET_EPSILON = 0.02
"""Optimal concurrency: the chosen N reaches (1 - ONSET_EPSILON / 2) of the throughput at N max."""

ONSET_PROBES = 6
"""Optimal concurrency: at most this many bisection probes."""

_LATENCY = {"ttft": ("TTFT", "ttft_ms"), "itl": ("ITL", "itl_ms")}


def _max_rate_for(
    metric: Callable[[float], float], target: float, low: float, high: float
) -> tuple[float, float, float]:
    """(rate, metric at low, metric at high): the highest rate in [low, high] whose metric is <= target.

    The metric increases with the rate; rate is 0 when even ``low`` misses and ``high`` when it meets.
    """
    at_low, at_high = metric(low), metric(high)
    if target < at_low:
        return 0.0, at_low, at_high
    if target >= at_high:
        return high, at_low, at_high
    # Brent's method finds the crossing in a handful of evaluations where bisection needs ~20. Its last
    # bracket has an evaluated end on the side that meets the target, within the tolerance of the root:
    # that end is the answer, so the result always meets the target without another evaluation.
    best = low

    def excess(rate: float) -> float:
        nonlocal best
        value = metric(rate) - target
        if value <= 0 and rate > best:
            best = rate
        return value

    brentq(excess, low, high, xtol=REL_TOL * low, rtol=REL_TOL, maxiter=MAX_ITERATIONS)
    return float(best), at_low, at_high


def size(model: QueueModel, workload: Workload, targets: Targets, max_batch: int, max_queue: int) -> Sizing:
    """The max request rate per replica meeting every target in ``targets`` (0 = not set).

    Mean TTFT and mean ITL are each solved by bisection on the rate in [lambda_min, lambda_max]; a
    target below the value at lambda_min makes the replica infeasible, one above the value at
    lambda_max does not bind. A tokens/s target gives 0.9 lambda_max. The result is the least rate.
    """
    check_point(workload, max_batch, max_queue)
    if not isinstance(targets, Targets):
        raise ModelError(f"targets must be Targets (got {type(targets).__name__})")
    high = model.max_rate_rps(workload, max_batch, max_queue)
    low = model.max_rate_rps(workload, 1, 0) / (1 - EPSILON) * EPSILON
    limits: dict[str, tuple[float, str]] = {}  # target -> (its max rate, what it says when it does not bind)
    misses = []
    for key, (label, field) in _LATENCY.items():
        target = getattr(targets, key + "_ms")
        if target <= 0:
            continue

        def metric(rate: float, field: str = field) -> float:
            value: float = getattr(model.analyze(rate, workload, max_batch, max_queue), field)
            return value

        rate, at_low, at_high = _max_rate_for(metric, target, low, high)
        if rate == 0:
            misses.append((key, f"{label} target {target:g} ms is below the {at_low:.4g} ms at the lowest load"))
        elif rate < high:
            limits[key] = (rate, f"{label} target {target:g} ms allows {rate:.6g} req/s")
        else:
            limits[key] = (rate, f"{label} target {target:g} ms does not bind ({at_high:.4g} ms at the max rate)")
    if misses:
        return Sizing(0.0, False, misses[0][0], "; ".join(m for _, m in misses), None)
    if targets.tps > 0:
        note = f"tokens/s target {targets.tps:g} allows {TPS_FRACTION:g} of the max rate"
        limits["tps"] = (TPS_FRACTION * high, note)
    binding = min(limits, key=lambda k: limits[k][0], default=None)
    if binding is None or limits[binding][0] >= high:
        notes = "; ".join(note for _, note in limits.values()) or "no target set"
        metrics = model.analyze(high, workload, max_batch, max_queue)
        return Sizing(high, True, None, f"{notes}: the max stable rate {high:.6g} req/s", metrics)
    rate, note = limits[binding]
    others = "".join(f"; {n}" for k, (_, n) in limits.items() if k != binding)
    reason = f"{note.replace(' allows ', ' binds at ', 1)}{others}"
    return Sizing(rate, True, binding, reason, model.analyze(rate, workload, max_batch, max_queue))


def _largest_within(values: Callable[[int], float], target: float, ceiling: int) -> int:
    """The largest B in [1, ceiling] with values(B) <= target, or 1 when there is none.

    ``values`` does not decrease with B (ITL and prefill time grow with the batch), so a bisection of
    log2(ceiling) evaluations finds it.
    """
    low, high = 1, ceiling  # invariant: the answer is in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        if values(mid) <= target:
            low = mid
        else:
            high = mid - 1
    return low


def choose_batch(
    model: QueueModel,
    workload: Workload,
    targets: Targets,
    policy: str,
    *,
    max_batch_size: int,
    at_tokens: int,
    override: int = 0,
    max_queue: int = 0,
) -> tuple[int, int]:
    """(N, Q): max batch and queue bound of a replica under batch ``policy``.

    "reference": N = ``override`` if set, else max(1, floor(max_batch_size * at_tokens / K)).
    "optimal": the smallest N whose SLO-limited throughput is within 1% of that at N max (``override``
    if set, else ``max_batch_size``), by a bisection of at most 6 probes bracketed by the closed forms.
    Q is ``max_queue`` if set, else 10 N.
    """
    if policy not in BATCH_POLICIES:
        raise ConfigError(f"unknown batch policy {policy!r}; choose one of: {', '.join(BATCH_POLICIES)}")
    for value, what in ((max_batch_size, "max_batch_size"), (at_tokens, "at_tokens")):
        if not isinstance(value, int) or value < 1:
            raise ModelError(f"{what} must be an integer >= 1 (got {value!r})")

    def queue(n: int) -> int:
        return max_queue if max_queue > 0 else 10 * n

    if policy == "reference":
        n = override if override > 0 else max(1, math.floor(max_batch_size * at_tokens / workload.out_tokens))
        return n, queue(n)
    ceiling = override if override > 0 else max_batch_size
    n = _optimal_concurrency(model, workload, targets, ceiling, queue)
    return n, queue(n)


def _optimal_concurrency(
    model: QueueModel, workload: Workload, targets: Targets, ceiling: int, queue: Callable[[int], int]
) -> int:
    """The smallest N in [1, ceiling] with f(N) >= (1 - eps/2) f(ceiling); f = SLO-limited throughput."""
    seen: dict[int, float] = {}

    def throughput(n: int) -> float:
        if n not in seen:
            metrics: QueueMetrics | None = size(model, workload, targets, n, queue(n)).metrics
            seen[n] = metrics.throughput_rps if metrics else 0.0
        return seen[n]

    peak = throughput(ceiling)
    if peak <= 0:
        return 1
    brackets = []
    if targets.itl_ms > 0:
        brackets.append(_largest_within(lambda b: model.itl_at(b, workload), targets.itl_ms, ceiling))
    if targets.ttft_ms > 0:
        brackets.append(_largest_within(lambda b: model.prefill_at(b, workload), targets.ttft_ms, ceiling))
    low, high = 1, ceiling
    if brackets:
        low = max(1, min(brackets))
        high = max(low, min(ceiling, max(3 * max(brackets), low + 1)))
    threshold = (1 - ONSET_EPSILON / 2) * peak
    for _ in range(ONSET_PROBES):
        if low >= high:
            break
        mid = (low + high) // 2
        if throughput(mid) >= threshold:
            high = mid
        else:
            low = mid + 1
    return max(1, min(ceiling, high))
