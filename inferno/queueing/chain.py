"""Steady state of the state-dependent birth-death chain every queue model is built on (design section 4).

State j is the number of requests in a replica, 0 <= j <= N + Q. Requests arrive at rate lambda and
leave at mu(min(j, N)). Balance gives p(j+1) = p(j) * lambda / mu(min(j+1, N)); the probabilities are
formed in log space and rescaled by their largest term, so that no N + Q overflows or underflows to
a wrong answer.
"""

from __future__ import annotations

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
    """Solve the chain with ``service_rates[n-1]`` = mu(n) for n = 1..N, arrival ``rate`` and queue bound Q."""
    n = len(service_rates)
    kmax = n + max_queue
    log_ratio = np.empty(kmax)
    log_ratio[:n] = np.log(rate) - np.log(service_rates)
    log_ratio[n:] = log_ratio[n - 1]
    log_p = np.empty(kmax + 1)
    log_p[0] = 0.0
    np.cumsum(log_ratio, out=log_p[1:])
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    states = np.arange(kmax + 1, dtype=np.float64)
    queued = float(p[n + 1 :] @ (states[n + 1 :] - n))
    in_service = float(p[: n + 1] @ states[: n + 1]) + n * float(p[n + 1 :].sum())
    in_system = in_service + queued
    throughput = rate * float(p[:kmax].sum())
    if not throughput > 0:
        raise ModelError(f"arrival rate {rate * 1000:g} req/s is too far beyond the capacity to analyse")
    response = in_system / throughput
    service = in_service / throughput
    return Chain(
        throughput=throughput,
        in_system=in_system,
        in_service=in_service,
        response=response,
        service=service,
        wait=queued / throughput,
        utilisation=min(max(in_service / n, 0.0), 1.0),
    )


def checked_rates(service_rates: npt.NDArray[np.float64], model: str) -> npt.NDArray[np.float64]:
    """``service_rates`` made read-only, or ModelError when some rate is not a finite positive number."""
    if not (np.all(np.isfinite(service_rates)) and np.all(service_rates > 0)):
        raise ModelError(
            f"queue model {model!r}: these parameters give a zero or unbounded service rate "
            "(service time 0 or too small to represent); give parameters with a positive service time"
        )
    service_rates.flags.writeable = False
    return service_rates
