"""Open-loop runs of one simulated replica: arrivals, token-length distributions and the figures they give."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from inferno.errors import ConfigError, ModelError
from inferno.sim.replica import EngineConfig, Replica, RequestRecord

LENGTH_KINDS = ("constant", "exponential", "lognormal")
"""Token-length distributions: fixed, geometric (the discrete exponential), lognormal (long-tailed)."""


@dataclass(frozen=True)
class Lengths:
    """A distribution of token counts per request (integers >= 1) with the given mean."""

    mean: float
    """Mean tokens per request (before the cap)."""
    kind: str = "exponential"
    """One of LENGTH_KINDS."""
    sigma: float = 1.0
    """Shape of the lognormal: the standard deviation of log(tokens); 1.0 gives a CV of 1.3, 1.5 of 2.9."""
    maximum: int = 0
    """Cap on a draw (like vLLM's max_tokens); 0 for none."""

    def __post_init__(self) -> None:
        if self.kind not in LENGTH_KINDS:
            raise ConfigError(f"unknown length distribution {self.kind!r}; choose one of: {', '.join(LENGTH_KINDS)}")
        if not (math.isfinite(self.mean) and self.mean >= 1):
            raise ModelError(f"mean token length must be a finite number >= 1 (got {self.mean!r})")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ModelError(f"sigma must be a finite number > 0 (got {self.sigma!r})")
        if self.maximum < 0:
            raise ModelError(f"maximum must be >= 0 (got {self.maximum!r})")

    def sample(self, rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
        """``n`` draws."""
        if self.kind == "constant":
            draws = np.full(n, max(1, round(self.mean)), dtype=np.int64)
        elif self.kind == "exponential":
            draws = rng.geometric(1 / self.mean, n).astype(np.int64)
        else:
            mu = math.log(self.mean) - self.sigma**2 / 2
            draws = np.maximum(1, np.rint(rng.lognormal(mu, self.sigma, n))).astype(np.int64)
        return np.minimum(draws, self.maximum) if self.maximum else draws


@dataclass(frozen=True)
class Stats:
    """Mean and percentiles of a latency (ms)."""

    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: npt.NDArray[np.float64], mean: float | None = None) -> Stats:
        """The stats of ``values``; ``mean`` overrides their plain mean (e.g. a token-weighted one)."""
        if len(values) == 0:
            return cls(math.nan, math.nan, math.nan, math.nan)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(np.mean(values)) if mean is None else mean, float(p50), float(p90), float(p99))


@dataclass(frozen=True)
class SimResult:
    """Figures of the measured requests of a run (those arriving after the warm-up and before the cool-down)."""

    requests: int
    """Requests measured."""
    rejected: int
    """Arrivals rejected in the whole run (queue full)."""
    rate_rps: float
    """Offered rate over the measured window (req/s)."""
    throughput_rps: float
    """Completions per second over the measured window."""
    in_service: float
    """Time-average number of requests in the batch over the measured window."""
    ttft: Stats
    """Time to first token."""
    itl: Stats
    """Inter-token latency: token-weighted mean (as vLLM's histogram gives); percentiles of each request's mean."""
    queue: Stats
    """Time from arrival to the first scheduled iteration."""
    e2e: Stats
    """Time from arrival to the last token."""

    def to_dict(self) -> dict[str, object]:
        """The result as a JSON-ready mapping."""
        return asdict(self)


def _arrivals(
    rng: np.random.Generator, rate_rps: float | None, arrivals_ms: Sequence[float] | None, requests: int
) -> npt.NDArray[np.float64]:
    """Poisson arrival times at ``rate_rps`` or the given trace (ms)."""
    if (rate_rps is None) == (arrivals_ms is None):
        raise ModelError("give either rate_rps (Poisson arrivals) or arrivals_ms (a trace)")
    if arrivals_ms is not None:
        times = np.asarray(arrivals_ms, dtype=np.float64)
        if len(times) < 2 or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0) or times[0] < 0:
            raise ModelError("arrivals_ms must hold at least 2 finite, non-negative times in increasing order")
        return times
    if not (isinstance(rate_rps, int | float) and math.isfinite(rate_rps) and rate_rps > 0):
        raise ModelError(f"rate_rps must be a finite number > 0 (got {rate_rps!r})")
    if requests < 2:
        raise ModelError(f"requests must be at least 2 (got {requests})")
    return np.cumsum(rng.exponential(1000 / rate_rps, requests))


def simulate(
    engine: EngineConfig,
    *,
    in_tokens: Lengths,
    out_tokens: Lengths,
    rate_rps: float | None = None,
    arrivals_ms: Sequence[float] | None = None,
    requests: int = 10_000,
    seed: int = 0,
    warmup: float = 0.1,
    cooldown: float = 0.1,
) -> SimResult:
    """Run ``requests`` Poisson arrivals at ``rate_rps`` (or the trace ``arrivals_ms``) through one replica.

    The first ``warmup`` and last ``cooldown`` shares of the arrivals load the replica but are not
    measured, so the figures describe the steady state rather than the empty start and the drain.
    """
    if not (0 <= warmup < 1 and 0 <= cooldown < 1 and warmup + cooldown < 1):
        raise ModelError(f"warmup and cooldown must be shares in [0, 1) summing below 1 (got {warmup}, {cooldown})")
    rng = np.random.default_rng(seed)
    times = _arrivals(rng, rate_rps, arrivals_ms, requests)
    n = len(times)
    prompt, output = in_tokens.sample(rng, n), out_tokens.sample(rng, n)
    first, last = math.floor(warmup * n), n - 1 - math.floor(cooldown * n)
    if last <= first:
        raise ModelError(f"{n} requests leave none to measure after the warm-up and cool-down")
    replica = Replica(engine)
    records: list[RequestRecord] = []
    index_of: dict[int, int] = {}
    batch_ms = {}
    for i in range(n):
        records += replica.advance_to(float(times[i]))
        if i in (first, last):
            batch_ms[i] = replica.batch_ms
        rid = replica.submit(float(times[i]), int(prompt[i]), int(output[i]))
        if rid is not None:
            index_of[rid] = i
    records += replica.advance_to(math.inf)
    span = float(times[last] - times[first])
    finish = np.array([r.finish_ms for r in records])
    done = [r for r in records if first <= index_of[r.id] <= last]
    return _result(
        done,
        replica.rejected,
        (last - first) / span * 1000,
        finish,
        times[first],
        span,
        batch_ms[last] - batch_ms[first],
    )


def _result(
    done: list[RequestRecord],
    rejected: int,
    rate_rps: float,
    finish: npt.NDArray[np.float64],
    start: float,
    span: float,
    batch_ms: float,
) -> SimResult:
    """Summarise the measured requests ``done`` of a run."""
    arrival = np.array([r.arrival_ms for r in done])
    scheduled = np.array([r.scheduled_ms for r in done])
    first_token = np.array([r.first_token_ms for r in done])
    finished = np.array([r.finish_ms for r in done])
    gaps = np.array([r.out_tokens - 1 for r in done], dtype=np.float64)
    decoding = gaps > 0
    decode_ms = (finished - first_token)[decoding]
    itl_mean = float(decode_ms.sum() / gaps[decoding].sum()) if decoding.any() else math.nan
    in_window = np.count_nonzero((finish >= start) & (finish <= start + span))
    return SimResult(
        requests=len(done),
        rejected=rejected,
        rate_rps=rate_rps,
        throughput_rps=float(in_window) / span * 1000,
        in_service=batch_ms / span,
        ttft=Stats.of(first_token - arrival),
        itl=Stats.of(decode_ms / gaps[decoding], itl_mean),
        queue=Stats.of(scheduled - arrival),
        e2e=Stats.of(finished - arrival),
    )
