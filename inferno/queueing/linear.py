"""The "inferno-2025" queue model: decode and prefill times linear in the batch size.

ITL at batch n is d(n) = alpha + beta n; prefill is p(n) = gamma + delta L n (0 when L = 0); a request
is in service for S(n) = p(n) + (K - 1) d(n). From the chain's mean service time Sbar the effective
batch n_eff is recovered, and ITL and prefill are read at n_eff (design section 4). These are the
reference system's formulas, kept exactly so that its published allocations are reproduced.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from inferno.queueing.chain import checked_rates, max_rate_rps, solve
from inferno.queueing.contract import QueueMetrics, Workload, check_point, check_rate, checked_params


def _decodes(workload: Workload) -> float:
    """Decode steps per request: K - 1, but 1 for a decode-only request of one token (reference rule)."""
    if workload.in_tokens == 0 and workload.out_tokens == 1:
        return 1.0
    return workload.out_tokens - 1


@lru_cache(maxsize=512)
def _service_rates(
    alpha: float, beta: float, gamma: float, delta: float, workload: Workload, n: int
) -> npt.NDArray[np.float64]:
    """mu(n) = n / S(n) per ms for n = 1..N (read-only, cached)."""
    batch = np.arange(1, n + 1, dtype=np.float64)
    with np.errstate(all="ignore"):  # checked_rates rejects what under- or overflows
        prefill = gamma + delta * workload.in_tokens * batch if workload.in_tokens > 0 else np.zeros(n)
        service = prefill + _decodes(workload) * (alpha + beta * batch)
        rates = batch / service
    return checked_rates(rates, LinearQueue.name)


@dataclass(frozen=True)
class LinearQueue:
    """Decode alpha + beta n and prefill gamma + delta L n (ms): the 2025 reference model."""

    alpha: float
    """Decode time at batch 0 (ms)."""
    beta: float
    """Decode time added per request in the batch (ms)."""
    gamma: float
    """Fixed prefill time (ms)."""
    delta: float
    """Prefill time per input token per request in the batch (ms)."""

    name: ClassVar[str] = "inferno-2025"
    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta", "gamma", "delta")

    def __post_init__(self) -> None:
        checked_params(self.name, self.param_names, self.params)

    @property
    def params(self) -> dict[str, float]:
        """alpha, beta, gamma and delta by name."""
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "delta": self.delta}

    def with_params(self, params: Mapping[str, float]) -> LinearQueue:
        """The same model with some or all parameters replaced."""
        return replace(self, **checked_params(self.name, self.param_names, {**self.params, **params}))

    def max_rate_rps(self, workload: Workload, max_batch: int, max_queue: int) -> float:
        """lambda_max = mu(N) (1 - 0.001), in req/s."""
        check_point(workload, max_batch, max_queue)
        return max_rate_rps(_service_rates(self.alpha, self.beta, self.gamma, self.delta, workload, max_batch))

    def analyze(self, rate_rps: float, workload: Workload, max_batch: int, max_queue: int) -> QueueMetrics:
        """Solve the chain; ITL = d(n_eff), TTFT = W + p(n_eff)."""
        check_rate(rate_rps)
        check_point(workload, max_batch, max_queue)
        rates = _service_rates(self.alpha, self.beta, self.gamma, self.delta, workload, max_batch)
        chain = solve(rates, rate_rps / 1000, max_queue)
        decodes = workload.out_tokens - 1
        slope = self.delta * workload.in_tokens + self.beta * decodes
        # slope 0 only for one-token decode-only requests, whose S(n) cannot tell n: use the mean batch
        n_eff = (chain.service - (self.gamma + self.alpha * decodes)) / slope if slope > 0 else chain.in_service
        n_eff = min(max(n_eff, 0.0), float(max_batch))
        return chain.metrics(
            rate_rps, chain.wait + self.prefill_at(n_eff, workload), self.itl_at(n_eff, workload), max_rate_rps(rates)
        )

    def itl_at(self, batch: float, workload: Workload) -> float:
        """d(B) = alpha + beta B (ms)."""
        return self.alpha + self.beta * batch

    def prefill_at(self, batch: float, workload: Workload) -> float:
        """p(B) = gamma + delta L B, or 0 when L = 0 (ms)."""
        return self.gamma + self.delta * workload.in_tokens * batch if workload.in_tokens > 0 else 0.0
