"""What the tuner learns from: one replica's mean latencies at its operating point, as one cycle saw them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from inferno.errors import ConfigError, Problem
from inferno.queueing import Workload
from inferno.spec import SystemSpec
from inferno.state import Snapshot

Key = tuple[str, str]
"""(model, accelerator): the unit one filter is kept for."""


def key_name(key: Key) -> str:
    """'MODEL/ACCELERATOR', the key's name in reports and persisted state."""
    return f"{key[0]}/{key[1]}"


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class Observation:
    """One replica's means over a metrics window: its load, its limits and the latencies it gave."""

    model: str
    """Model (LLM) name, as in the performance data."""
    accelerator: str
    """Accelerator configuration name, as in the performance data."""
    rate_rps: float
    """Offered request rate of the replica (req/s)."""
    in_tokens: float
    """Mean input tokens per request."""
    out_tokens: float
    """Mean output tokens per request (at least 1)."""
    max_batch: int
    """vLLM --max-num-seqs of the replica."""
    max_queue: int
    """Waiting-queue bound the queue model uses for the replica."""
    ttft_ms: float
    """Mean time to first token (ms)."""
    itl_ms: float
    """Mean inter-token latency (ms)."""
    replica: str = ""
    """Pod name, for reports."""
    timestamp: float | None = None
    """Unix time (s) of the end of the metrics window, for reports."""

    @property
    def key(self) -> Key:
        """(model, accelerator)."""
        return (self.model, self.accelerator)

    @property
    def workload(self) -> Workload:
        """The mean token lengths (only for an observation without a :meth:`problem`)."""
        return Workload(self.in_tokens, self.out_tokens)

    def problem(self) -> str | None:
        """Why the observation must not reach the filter (NaN, zero rate, negative latency, ...), or None."""
        if not self.model or not self.accelerator:
            return "model or accelerator is empty"
        numbers = {
            "rate_rps": self.rate_rps,
            "in_tokens": self.in_tokens,
            "out_tokens": self.out_tokens,
            "ttft_ms": self.ttft_ms,
            "itl_ms": self.itl_ms,
        }
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                return f"{name} is not a finite number ({value!r})"
        for name in ("rate_rps", "ttft_ms", "itl_ms"):
            if numbers[name] <= 0:
                return f"{name} must be > 0 ({numbers[name]!r})"
        if self.in_tokens < 0 or self.out_tokens < 1:
            return f"token lengths out of range (in {self.in_tokens!r} >= 0, out {self.out_tokens!r} >= 1)"
        if self.max_batch < 1 or self.max_queue < 0:
            return f"max_batch must be >= 1 and max_queue >= 0 ({self.max_batch}, {self.max_queue})"
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the keys of one line of an observations file)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "observation") -> Observation:
        """An observation from :meth:`to_dict` data; ConfigError naming each missing, unknown or mistyped field.

        Values that are well-typed but unusable (NaN, a zero rate) are accepted here: the tuner skips and
        counts them.
        """
        try:
            return _OBSERVATION.validate_python(data)
        except ValidationError as exc:
            raise ConfigError(
                [Problem(where, ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors(include_url=False)]
            ) from exc


_OBSERVATION = TypeAdapter(Observation)

QUEUE_PER_BATCH = 10
"""Without a server's maxQueueSize the queue bound is 10 N, as the optimizer sizes it."""


def observations_from_snapshot(snapshot: Snapshot, spec: SystemSpec) -> list[Observation]:
    """One observation per pod of every variant in ``snapshot``, at the queue bound the optimizer uses.

    A metric that was not observed becomes NaN and an unknown ``--max-num-seqs`` becomes 0, so that the
    tuner skips and counts the observation with the reason instead of guessing a value.
    """
    queues = {s.name: s.max_queue_size for s in spec.server_data.servers}

    def number(value: float | None) -> float:
        return math.nan if value is None else value

    observations = []
    for server in snapshot.servers:
        for variant in server.variants:
            batch = variant.max_num_seqs or 0
            queue = queues.get(server.name, 0) or QUEUE_PER_BATCH * batch
            for pod in variant.pods:
                m = pod.metrics
                observations.append(
                    Observation(
                        model=server.model,
                        accelerator=variant.accelerator,
                        rate_rps=number(m.arrival_rps),
                        in_tokens=number(m.in_tokens),
                        out_tokens=number(m.out_tokens),
                        max_batch=batch,
                        max_queue=queue,
                        ttft_ms=number(m.ttft_ms),
                        itl_ms=number(m.itl_ms),
                        replica=f"{pod.namespace}/{pod.pod}",
                        timestamp=snapshot.taken_at,
                    )
                )
    return observations
