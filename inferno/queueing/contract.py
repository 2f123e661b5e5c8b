"""What a queue model is: its Protocol and the values it takes and returns.

Public units are requests per second and milliseconds; the formulas inside the models work per
millisecond (design section 4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Protocol

from inferno.errors import ModelError


def _finite(value: float, what: str, *, minimum: float = 0.0, positive: bool = False) -> None:
    """Raise ModelError unless ``value`` is a finite number >= ``minimum`` (> 0 when ``positive``)."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ModelError(f"{what} must be a finite number (got {value!r})")
    if value < minimum or (positive and value <= 0):
        raise ModelError(f"{what} must be {'> 0' if positive else f'>= {minimum:g}'} (got {value!r})")


@dataclass(frozen=True)
class Workload:
    """Mean token lengths of the requests a replica serves."""

    in_tokens: float
    """Mean input (prompt) tokens L; may be 0."""
    out_tokens: float
    """Mean output tokens K; at least 1."""

    def __post_init__(self) -> None:
        _finite(self.in_tokens, "in_tokens")
        _finite(self.out_tokens, "out_tokens", minimum=1.0)


@dataclass(frozen=True)
class QueueMetrics:
    """Steady state of one replica offered ``rate_rps`` requests per second."""

    rate_rps: float
    """Offered request rate (req/s)."""
    throughput_rps: float
    """Served request rate (req/s); below the offered rate when the queue is full at times."""
    ttft_ms: float
    """Mean time to first token (ms)."""
    itl_ms: float
    """Mean inter-token latency (ms)."""
    wait_ms: float
    """Mean time waiting before service (ms)."""
    response_ms: float
    """Mean time in the replica, waiting plus service (ms)."""
    in_service: float
    """Mean number of requests in the batch."""
    utilisation: float
    """Mean batch occupancy, in_service / max batch (0-1)."""
    max_rate_rps: float
    """Highest rate the model is stable at, lambda_max (req/s)."""

    def to_dict(self) -> dict[str, float]:
        """The metrics as a JSON-ready mapping."""
        return {
            "rate_rps": self.rate_rps,
            "throughput_rps": self.throughput_rps,
            "ttft_ms": self.ttft_ms,
            "itl_ms": self.itl_ms,
            "wait_ms": self.wait_ms,
            "response_ms": self.response_ms,
            "in_service": self.in_service,
            "utilisation": self.utilisation,
            "max_rate_rps": self.max_rate_rps,
        }


@dataclass(frozen=True)
class Targets:
    """Mean-latency and throughput SLO targets of a replica; 0 means not set."""

    ttft_ms: float = 0.0
    """Mean time to first token (ms)."""
    itl_ms: float = 0.0
    """Mean inter-token latency (ms)."""
    tps: float = 0.0
    """Output tokens per second."""

    def __post_init__(self) -> None:
        for field in ("ttft_ms", "itl_ms", "tps"):
            _finite(getattr(self, field), f"target {field}")


@dataclass(frozen=True)
class Sizing:
    """The max request rate per replica that meets every target, and why."""

    rate_rps: float
    """Max sustainable request rate per replica (req/s); 0 when infeasible."""
    feasible: bool
    """False when some target cannot be met even at the lowest load."""
    binding: str | None
    """The target that limits the rate: 'ttft', 'itl' or 'tps'; None when none does (rate = lambda_max)."""
    reason: str
    """Human-readable explanation."""
    metrics: QueueMetrics | None
    """Analysis at ``rate_rps``; None when infeasible."""


class QueueModel(Protocol):
    """A performance model of one replica: a state-dependent birth-death queue (design section 4).

    Implementations are immutable and constructed with their parameters; ``max_batch`` is the vLLM
    ``--max-num-seqs`` N and ``max_queue`` the waiting-queue bound Q.
    """

    @property
    def name(self) -> str:
        """The model's name in QUEUE_MODELS."""
        ...

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the tunable parameters, in state-vector order."""
        ...

    @property
    def params(self) -> dict[str, float]:
        """Current parameter values by name."""
        ...

    def with_params(self, params: Mapping[str, float]) -> QueueModel:
        """The same kind of model with some or all parameters replaced."""
        ...

    def analyze(self, rate_rps: float, workload: Workload, max_batch: int, max_queue: int) -> QueueMetrics:
        """Steady-state metrics at an offered rate (req/s)."""
        ...

    def max_rate_rps(self, workload: Workload, max_batch: int, max_queue: int) -> float:
        """lambda_max: the highest rate (req/s) the analysis is run at, just below the full-batch rate."""
        ...

    def itl_at(self, batch: float, workload: Workload) -> float:
        """Closed-form mean inter-token latency (ms) at batch size ``batch``."""
        ...

    def prefill_at(self, batch: float, workload: Workload) -> float:
        """Prefill time (ms) of a request at batch size ``batch``."""
        ...


def checked_params(model: str, names: tuple[str, ...], params: Mapping[str, float]) -> dict[str, float]:
    """``params`` of queue model ``model`` validated: exactly ``names``, each a finite number > 0."""
    unknown = sorted(set(params) - set(names))
    missing = [n for n in names if n not in params]
    if unknown or missing:
        problems = [f"unknown {', '.join(unknown)}"] if unknown else []
        problems += [f"missing {', '.join(missing)}"] if missing else []
        raise ModelError(f"queue model {model!r} takes parameters {', '.join(names)}: {'; '.join(problems)}")
    for name in names:
        _finite(params[name], f"{model} parameter {name}", positive=True)
    return {name: float(params[name]) for name in names}


def check_point(workload: Workload, max_batch: int, max_queue: int) -> None:
    """Raise ModelError unless (N, Q) is an operating point a queue can be built for."""
    if not isinstance(workload, Workload):
        raise ModelError(f"workload must be a Workload (got {type(workload).__name__})")
    for value, what, low in ((max_batch, "max_batch", 1), (max_queue, "max_queue", 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ModelError(f"{what} must be an integer >= {low} (got {value!r})")
    if max_batch + max_queue > MAX_STATES:
        raise ModelError(f"max_batch + max_queue must be at most {MAX_STATES} (got {max_batch + max_queue})")


def check_rate(rate_rps: float) -> None:
    """Raise ModelError unless ``rate_rps`` is a finite rate > 0."""
    _finite(rate_rps, "rate_rps", positive=True)


MAX_STATES = 1 << 16
"""Largest N + Q a chain is built for (the numerics are exact well beyond the 4096 the design asks for)."""
