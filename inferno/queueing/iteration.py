"""The "iteration" queue model (2026): iteration times of a continuous-batching engine with chunked prefill.

One engine iteration takes alpha + beta * (tokens computed) + gamma * (KV-cache tokens read) ms; at
most M tokens are computed per iteration (vLLM ``max_num_batched_tokens``), so a prompt of L tokens
is prefilled in nc chunks. A request spends nc + K iterations in the batch. Formulas: design section 4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from inferno.errors import ModelError
from inferno.queueing.chain import checked_rates, max_rate_rps, solve
from inferno.queueing.contract import QueueMetrics, Workload, check_point, check_rate, checked_params
from inferno.spec import DEFAULT_MAX_BATCHED_TOKENS

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


def nearest_batch(batch: float) -> int:
    """``batch`` rounded half up, at least 1: the batch size whose chunk count a mean batch uses."""
    return max(1, math.floor(batch + 0.5))


def chunks(batch: Ints, workload: Workload, max_tokens: int) -> Ints:
    """nc(B): the smallest m >= 1 with floor(max(0, (m + K)(M - L/m) / (L + K))) >= B, per B in ``batch``.

    The left side grows with m, so m is the ceiling of the positive root of
    M m^2 + (K M - L - B (L + K)) m - K L = 0, corrected by one step for rounding.
    """
    big_l, big_k, big_m = workload.in_tokens, workload.out_tokens, float(max_tokens)

    def fits(m: Ints) -> npt.NDArray[np.bool_]:
        return np.floor(np.maximum(0.0, (m + big_k) * (big_m - big_l / m) / (big_l + big_k))) >= batch

    b = big_k * big_m - big_l - batch * (big_l + big_k)
    c = big_k * big_l
    disc = np.sqrt(b * b + 4.0 * big_m * c)
    # the stable form of the positive root for each sign of b (b + disc is 0 only when c is)
    upper = np.where((b >= 0) & (b + disc > 0), b + disc, 1.0)
    root = np.where(b >= 0, 2.0 * c / upper, (disc - b) / (2.0 * big_m))
    m = np.maximum(1, np.ceil(root)).astype(np.int64)
    m = np.where(fits(m), m, m + 1)
    return np.where((m > 1) & fits(np.maximum(m - 1, 1)), m - 1, m)


@lru_cache(maxsize=65536)
def _chunks_at(batch: int, workload: Workload, max_tokens: int) -> int:
    """nc(B) for one batch size (cached: sizing asks for the same few many times)."""
    return int(chunks(np.array([batch], dtype=np.int64), workload, max_tokens)[0])


@lru_cache(maxsize=512)
def _service_rates(alpha: float, beta: float, gamma: float, max_tokens: int, workload: Workload, n: int) -> Floats:
    """mu(B) = B / ((nc + K) T_iter(B)) per ms for B = 1..n (read-only, cached)."""
    batch = np.arange(1, n + 1, dtype=np.int64)
    nc = chunks(batch, workload, max_tokens)
    with np.errstate(all="ignore"):  # checked_rates rejects what under- or overflows
        _, delta = _work(beta, gamma, workload, nc)
        rates = batch / ((nc + workload.out_tokens) * (alpha + batch * delta))
    return checked_rates(rates, IterationQueue.name)


def _work(beta: float, gamma: float, workload: Workload, nc: Ints | int) -> tuple[Floats, Floats]:
    """(w_prefill(nc), delta(nc)): a request's prefill work and its mean work per iteration (ms)."""
    big_l, big_k = workload.in_tokens, workload.out_tokens
    w_prefill = (beta + gamma * (np.asarray(nc) + 1) / 2) * big_l
    w_decode = beta * big_k + gamma * big_k * (big_l + (big_k + 1) / 2)
    return w_prefill, (w_prefill + w_decode) / (np.asarray(nc) + big_k)


@dataclass(frozen=True)
class IterationQueue:
    """The default queue model: per-iteration overhead alpha, compute beta and KV-read gamma (ms per token)."""

    alpha: float
    """Per-iteration overhead (ms)."""
    beta: float
    """Compute time per token computed (ms)."""
    gamma: float
    """KV-cache read time per token read (ms)."""
    max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS
    """M: max tokens computed per iteration (vLLM ``max_num_batched_tokens``)."""

    name: ClassVar[str] = "iteration"
    param_names: ClassVar[tuple[str, ...]] = ("alpha", "beta", "gamma")

    def __post_init__(self) -> None:
        checked_params(self.name, self.param_names, self.params)
        tokens = self.max_batched_tokens
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise ModelError(f"max_batched_tokens must be an integer >= 1 (got {tokens!r})")

    @property
    def params(self) -> dict[str, float]:
        """alpha, beta and gamma by name."""
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}

    def with_params(self, params: Mapping[str, float]) -> IterationQueue:
        """The same model with some or all of alpha, beta, gamma replaced."""
        values = checked_params(self.name, self.param_names, {**self.params, **params})
        return IterationQueue(values["alpha"], values["beta"], values["gamma"], self.max_batched_tokens)

    def service_rates(self, workload: Workload, max_batch: int) -> Floats:
        """mu(B) per ms for B = 1..max_batch."""
        return _service_rates(self.alpha, self.beta, self.gamma, self.max_batched_tokens, workload, max_batch)

    def max_rate_rps(self, workload: Workload, max_batch: int, max_queue: int) -> float:
        """lambda_max = mu(N) (1 - 0.001), in req/s."""
        check_point(workload, max_batch, max_queue)
        return max_rate_rps(self.service_rates(workload, max_batch))

    def analyze(self, rate_rps: float, workload: Workload, max_batch: int, max_queue: int) -> QueueMetrics:
        """Solve the chain; prefill at the mean batch Bbar, ITL = (Sbar - prefill) / K, TTFT = W + prefill + ITL."""
        check_rate(rate_rps)
        check_point(workload, max_batch, max_queue)
        rates = self.service_rates(workload, max_batch)
        chain = solve(rates, rate_rps / 1000, max_queue)
        batch = chain.in_service
        nc = self.chunks_at(min(nearest_batch(batch), max_batch), workload)
        prefill = self.prefill_with(batch, nc, workload)
        itl = (chain.service - prefill) / workload.out_tokens
        return chain.metrics(rate_rps, chain.wait + prefill + itl, itl, max_rate_rps(rates))

    def chunks_at(self, batch: int, workload: Workload) -> int:
        """nc(B) for one batch size B >= 1."""
        return _chunks_at(batch, workload, self.max_batched_tokens)

    def prefill_with(self, batch: float, nc: int, workload: Workload) -> float:
        """prefill(B) = nc max(0, alpha + (B - 1) delta(nc)) + w_prefill(nc), in ms."""
        w_prefill, delta = _work(self.beta, self.gamma, workload, nc)
        return nc * max(0.0, self.alpha + (batch - 1) * float(delta)) + float(w_prefill)

    def prefill_at(self, batch: float, workload: Workload) -> float:
        """prefill(B) with nc at B rounded half up (ms)."""
        return self.prefill_with(batch, self.chunks_at(nearest_batch(batch), workload), workload)

    def itl_at(self, batch: float, workload: Workload) -> float:
        """itl(B) = max(0, alpha + (B - 1) delta) + beta + gamma (L + (K + 1) / 2), in ms."""
        _, delta = _work(self.beta, self.gamma, workload, self.chunks_at(nearest_batch(batch), workload))
        big_l, big_k = workload.in_tokens, workload.out_tokens
        return max(0.0, self.alpha + (batch - 1) * float(delta)) + self.beta + self.gamma * (big_l + (big_k + 1) / 2)
