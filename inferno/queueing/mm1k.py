"""The "mm1k" queue model: a plain M/M/1/K queue, the simple baseline.

The replica is one server that always works at its full-batch rate mu(N) of the iteration model,
whatever the number of requests in it: the service rate does not depend on the state. Latencies are
the iteration model's closed forms at the chain's mean batch. It takes the 2026 ``perfParms``
(alpha, beta, gamma). Ignoring state dependence makes it see small batches and no queue until the
load is close to the full-batch rate, so it is optimistic at medium and high load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from inferno.queueing.chain import max_rate_rps, solve
from inferno.queueing.contract import QueueMetrics, Workload, check_point, check_rate, checked_params
from inferno.queueing.iteration import IterationQueue


@dataclass(frozen=True)
class MM1KQueue:
    """M/M/1/K at the full-batch service rate of an iteration model with the same parameters."""

    iteration: IterationQueue
    """The parameters (alpha, beta, gamma, M) and closed forms."""

    name: ClassVar[str] = "mm1k"
    param_names: ClassVar[tuple[str, ...]] = IterationQueue.param_names

    @property
    def params(self) -> dict[str, float]:
        """alpha, beta and gamma by name."""
        return self.iteration.params

    def with_params(self, params: Mapping[str, float]) -> MM1KQueue:
        """The same model with some or all of alpha, beta, gamma replaced."""
        return MM1KQueue(
            self.iteration.with_params(checked_params(self.name, self.param_names, {**self.params, **params}))
        )

    def max_rate_rps(self, workload: Workload, max_batch: int, max_queue: int) -> float:
        """lambda_max = mu(N) (1 - 0.001), in req/s."""
        return self.iteration.max_rate_rps(workload, max_batch, max_queue)

    def analyze(self, rate_rps: float, workload: Workload, max_batch: int, max_queue: int) -> QueueMetrics:
        """Solve M/M/1/K at rate mu(N); prefill and ITL at the mean batch, TTFT = W + prefill + ITL."""
        check_rate(rate_rps)
        check_point(workload, max_batch, max_queue)
        rates = self.iteration.service_rates(workload, max_batch)
        chain = solve(np.full(max_batch, rates[-1]), rate_rps / 1000, max_queue)
        batch = chain.in_service
        prefill = self.iteration.prefill_at(batch, workload)
        itl = self.iteration.itl_at(batch, workload)
        return chain.metrics(rate_rps, chain.wait + prefill + itl, itl, max_rate_rps(rates))

    def itl_at(self, batch: float, workload: Workload) -> float:
        """The iteration model's closed-form ITL (ms)."""
        return self.iteration.itl_at(batch, workload)

    def prefill_at(self, batch: float, workload: Workload) -> float:
        """The iteration model's prefill time (ms)."""
        return self.iteration.prefill_at(batch, workload)
