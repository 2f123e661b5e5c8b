"""Steady state of the state-dependent birth-death chain every queue model is built on (design section 4).

State j is the number of requests in a replica, 0 <= j <= N + Q. Requests arrive at rate lambda and
leave at mu(min(j, N)). Balance gives p(j+1) = p(j) * lambda / mu(min(j+1, N)); the probabilities are
formed in log space and rescaled by their largest term, so that no N + Q overflows or underflows to
a wrong answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inferno.errors import ModelError
from inferno.queueing.contract import QueueMetrics

EPSILON = 0.001
"""lambda_min = mu(1) * EPSILON and lambda_max = mu(N) * (1 - EPSILON) (reference values)."""


@dataclass(frozen=True)
class Chain:
    """Steady-state figures of a chain solved at one arrival rate (times in ms, rates per ms)."""

    throughput: float
    """X = lambda (1 - p(N + Q))."""
    in_system: float
    """Lbar = sum j p(j)."""
    in_service: float
    """Bbar = sum_{j<=N} j p(j) + N (1 - sum_{j<=N} p(j))."""
    response: float
    """T = Lbar / X."""
    service: float
    """Sbar = Bbar / X."""
    wait: float
    """W = max(0, T - Sbar), formed as sum_{j>N} (j - N) p(j) / X, which is the same without cancellation."""
    utilisation: float
    """rho = clamp(Bbar / N, 0, 1)."""

    def metrics(self, rate_rps: float, ttft_ms: float, itl_ms: float, max_rate_rps: float) -> QueueMetrics:
        """The public metrics of this solution, given the model's TTFT, ITL and lambda_max."""
        return QueueMetrics(
            rate_rps=rate_rps,
            throughput_rps=self.throughput * 1000,
            ttft_ms=ttft_ms,
            itl_ms=itl_ms,
            wait_ms=self.wait,
            response_ms=self.response,
            in_service=self.in_service,
            utilisation=self.utilisation,
            max_rate_rps=max_rate_rps,
        )


def max_rate_rps(service_rates: npt.NDArray[np.float64]) -> float:
    """lambda_max = mu(N) (1 - EPSILON), in req/s, from mu(n) per ms."""
    return float(service_rates[-1]) * (1 - EPSILON) * 1000


def solve(service_rates: npt.NDArray[np.float64], rate: float, max_queue: int) -> Chain:
    """Solve the chain with ``service_rates[n-1]`` = mu(n) for n = 1..N, arrival ``rate`` and queue bound Q.

    States 0..N are summed term by term; the Q waiting states form a geometric series of ratio
    x = lambda / mu(N) and are summed in closed form (stable for every x, including x = 1), so the cost
    does not grow with Q.
    """
    n = len(service_rates)
    log_p = np.empty(n + 1)
    log_p[0] = 0.0
    np.cumsum(math.log(rate) - np.log(service_rates), out=log_p[1:])
    lr = float(log_p[n] - log_p[n - 1])  # log x
    log_top = float(log_p[n])
    if max_queue > 0:
        log_tail = log_top + _log_geometric(max_queue, lr)  # log of sum_{j=1..Q} p(N + j)
        log_below = log_top + _log_geometric(max_queue - 1, lr) if max_queue > 1 else -math.inf
    else:
        log_tail, log_below = -math.inf, -math.inf
    shift = max(float(log_p.max()), log_tail)
    head = np.exp(log_p - shift)
    log_z = shift + math.log(float(head.sum()) + math.exp(log_tail - shift))
    head *= math.exp(shift - log_z)
    tail = math.exp(log_tail - log_z)  # P(a request waits in the queue)
    queued = tail * _mean_geometric(max_queue, lr) if max_queue > 0 else 0.0
    in_service = float(head @ np.arange(n + 1, dtype=np.float64)) + n * tail
    in_system = in_service + queued
    # 1 - p(N + Q), summed from its terms so that a nearly full chain loses no digits
    not_full = float(head.sum()) + math.exp(log_below - log_z) if max_queue > 0 else float(head[:n].sum())
    throughput = rate * not_full
    if not throughput > 0:
        raise ModelError(f"arrival rate {rate * 1000:g} req/s is too far beyond the capacity to analyse")
    return Chain(
        throughput=throughput,
        in_system=in_system,
        in_service=in_service,
        response=in_system / throughput,
        service=in_service / throughput,
        wait=queued / throughput,
        utilisation=min(max(in_service / n, 0.0), 1.0),
    )


def _log_geometric(count: int, lr: float) -> float:
    """log sum_{j=1..count} x^j for x = e^lr and count >= 1, without overflow or cancellation."""
    if lr == 0.0:
        return math.log(count)
    if lr > 0:  # x^count dominates: factor it out
        return count * lr + math.log(-math.expm1(-count * lr)) - math.log(-math.expm1(-lr))
    return lr + math.log(-math.expm1(count * lr)) - math.log(-math.expm1(lr))


def _mean_geometric(count: int, lr: float) -> float:
    """Mean of j over j = 1..count with weights x^j (x = e^lr): 1/(1-x) - count x^count / (1 - x^count)."""
    if abs(lr) * count < 1e-6:  # the two terms cancel: the expansion around x = 1 instead
        return (count + 1) / 2 + lr * (count * count - 1) / 12
    first = -1.0 / math.expm1(lr)
    scaled = -count * lr
    second = 0.0 if scaled > 700 else count / math.expm1(scaled)
    return first - second


def checked_rates(service_rates: npt.NDArray[np.float64], model: str) -> npt.NDArray[np.float64]:
    """``service_rates`` made read-only, or ModelError when some rate is not a finite positive number."""
    if not (np.all(np.isfinite(service_rates)) and np.all(service_rates > 0)):
        raise ModelError(
            f"queue model {model!r}: these parameters give a zero or unbounded service rate "
            "(service time 0 or too small to represent); give parameters with a positive service time"
        )
    service_rates.flags.writeable = False
    return service_rates
