"""Runtime values that flow between the stages of a cycle.

Plain frozen dataclasses: each stage returns one of them, so a cycle can be printed, saved and replayed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config

from inferno.errors import ConfigError, Problem
from inferno.spec import SystemSpec

# --- optimizer: candidates and plans ------------------------------------------------------
# (kept together; other stages' values live in their own blocks of this module)


@dataclass(frozen=True)
class Candidate:
    """One way to serve a server: replicas of one accelerator configuration, as sized by a queue model."""

    server: str
    accelerator: str
    acc_type: str
    cards_per_replica: int
    """Cards of ``acc_type`` one replica holds (accCount * multiplicity)."""
    cost_per_replica: float
    """cents/hour of one replica (accelerator cost * accCount)."""
    rate_per_replica: float
    """Max request rate per replica meeting the SLOs (req/s); 0 at zero load when not sized."""
    max_batch: int
    max_queue: int
    replicas: int
    """Replicas needed for the whole demand (at least minNumReplicas, at most maxNumReplicas)."""
    value: float
    """Transition value: the reference's ranking of candidates (lower is better)."""

    @property
    def cost(self) -> float:
        """cents/hour of ``replicas`` replicas."""
        return self.cost_per_replica * self.replicas

    @property
    def cards(self) -> int:
        """Cards of ``acc_type`` that ``replicas`` replicas hold."""
        return self.cards_per_replica * self.replicas


@dataclass(frozen=True)
class ServerDemand:
    """What a server needs and the candidates that can serve it."""

    name: str
    model: str
    class_name: str
    priority: int
    demand_rps: float
    """Offered request rate (req/s) the allocation must sustain."""
    min_replicas: int
    max_replicas: int
    """0 = no limit."""
    current_accelerator: str
    current_replicas: int
    keep_accelerator: bool
    candidates: tuple[Candidate, ...]
    """Sorted by (value, cost, accelerator): the first is the preferred one."""
    reason: str = ""
    """Why there is no candidate, when there is none."""


@dataclass(frozen=True)
class OptimizationProblem:
    """The input of a solver: every server's demand and candidates, and the capacity in cards per type."""

    servers: tuple[ServerDemand, ...]
    capacity: dict[str, int]
    unlimited: bool = False


@dataclass(frozen=True)
class VariantAllocation:
    """Replicas of one accelerator configuration given to a server."""

    accelerator: str
    acc_type: str
    replicas: int
    max_batch: int
    cost: float
    cards: int
    rate_rps: float
    """Request rate these replicas serve (req/s)."""
    ttft_ms: float
    itl_ms: float


@dataclass(frozen=True)
class Allocation:
    """A server's share of the plan: its variants and what stays unmet."""

    server: str
    variants: tuple[VariantAllocation, ...]
    demand_rps: float
    unmet_rps: float
    reason: str = ""
    """Why the server is not (fully) served, when it is not."""

    @property
    def replicas(self) -> int:
        """Replicas over all variants."""
        return sum(v.replicas for v in self.variants)

    @property
    def cost(self) -> float:
        """cents/hour over all variants."""
        return sum(v.cost for v in self.variants)

    @property
    def accelerator(self) -> str:
        """The accelerator with the most replicas ('' when none)."""
        used = [v for v in self.variants if v.replicas > 0]
        return max(used, key=lambda v: (v.replicas, v.accelerator)).accelerator if used else ""


@dataclass(frozen=True)
class Plan:
    """A solver's answer: one allocation per server, and how it was found."""

    allocations: dict[str, Allocation]
    solver: str
    status: str
    """'optimal', 'feasible' (time limit or gap), 'heuristic' (greedy/unlimited) or 'fallback'."""
    solve_ms: float
    build_ms: float = 0.0
    objective: float | None = None
    gap: float | None = None
    capacity: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def total_cost(self) -> float:
        """cents/hour of the whole plan."""
        return sum(a.cost for a in self.allocations.values())

    def to_dict(self) -> dict[str, object]:
        """The plan as JSON-ready data (the `inferno plan --json` shape)."""
        return {
            "allocations": {
                name: {
                    "accelerator": a.accelerator,
                    "replicas": a.replicas,
                    "max_batch": max((v.max_batch for v in a.variants if v.replicas), default=0),
                    "cost": a.cost,
                    "ttft_ms": max((v.ttft_ms for v in a.variants if v.replicas), default=0.0),
                    "itl_ms": max((v.itl_ms for v in a.variants if v.replicas), default=0.0),
                    "demand_rps": a.demand_rps,
                    "unmet_rps": a.unmet_rps,
                    "reason": a.reason,
                    "variants": [
                        {
                            "accelerator": v.accelerator,
                            "type": v.acc_type,
                            "replicas": v.replicas,
                            "max_batch": v.max_batch,
                            "cost": v.cost,
                            "cards": v.cards,
                            "rate_rps": v.rate_rps,
                            "ttft_ms": v.ttft_ms,
                            "itl_ms": v.itl_ms,
                        }
                        for v in a.variants
                    ],
                }
                for name, a in self.allocations.items()
            },
            "total_cost": self.total_cost,
            "solver": self.solver,
            "status": self.status,
            "solve_ms": self.solve_ms,
            "build_ms": self.build_ms,
            "objective": self.objective,
            "gap": self.gap,
            "cards": {t: {"used": self.cards_used().get(t, 0), "available": n} for t, n in self.capacity.items()},
            "warnings": list(self.warnings),
        }

    def cards_used(self) -> dict[str, int]:
        """Cards used per accelerator type."""
        used: dict[str, int] = {}
        for alloc in self.allocations.values():
            for v in alloc.variants:
                used[v.acc_type] = used.get(v.acc_type, 0) + v.cards
        return used


# --- collector and actuator: snapshots of the cluster and actions on it -------------------
# (kept together; the collector returns a Snapshot, the actuator takes Actions)

LOAD_LABELS = "labels"
"""``Load.source`` of a load read from the inferno.server.load.* labels."""
LOAD_PROMETHEUS = "prometheus"
"""``Load.source`` of a load measured by Prometheus."""


@dataclass(frozen=True)
class Metrics:
    """Means over the metrics window; None = not observed, never a stand-in zero."""

    arrival_rps: float | None = None
    """Offered request rate (req/s): completions plus the growth of the waiting queue."""
    completion_rps: float | None = None
    """Finished requests per second."""
    in_tokens: float | None = None
    """Mean input tokens per request (None when no request finished in the window)."""
    out_tokens: float | None = None
    """Mean output tokens per request."""
    ttft_ms: float | None = None
    itl_ms: float | None = None
    running: float | None = None
    """Mean requests in the batch."""
    waiting: float | None = None
    """Mean requests in the waiting queue."""
    kv_cache: float | None = None
    """Mean KV-cache use (0-1)."""


@dataclass(frozen=True)
class PodMetrics:
    """One replica's metrics (the tuner's observations)."""

    namespace: str
    pod: str
    metrics: Metrics


@dataclass(frozen=True)
class Variant:
    """One Deployment of a server: the replicas on one accelerator configuration."""

    namespace: str
    deployment: str
    server: str
    accelerator: str
    replicas: int
    """spec.replicas: what the Deployment asks for."""
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    max_num_seqs: int | None
    """vLLM --max-num-seqs (or the maxbatchsize label); None = not set (vLLM's default)."""
    container: str
    """The vLLM container ('' when it could not be told)."""
    resource_version: str
    generation: int
    metrics: Metrics = Metrics()
    pods: tuple[PodMetrics, ...] = ()
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Load:
    """The load the optimizer sizes a server for."""

    arrival_rpm: float
    """Requests per minute (the reference unit)."""
    in_tokens: float | None
    """None when idle (no request finished in the window)."""
    out_tokens: float | None
    source: str
    """LOAD_PROMETHEUS or LOAD_LABELS."""


@dataclass(frozen=True)
class ObservedServer:
    """A server as observed: its variants, their sum, and what is wrong with the data."""

    name: str
    model: str
    class_name: str
    variants: tuple[Variant, ...]
    metrics: Metrics
    """Over all variants."""
    load: Load | None
    """None when neither Prometheus nor the load labels gave one."""
    problems: tuple[str, ...] = ()
    """Missing, stale, NaN or partial data, inconsistent labels: act on this server only when empty."""
    notes: tuple[str, ...] = ()
    """Facts worth a log line that do not block acting (e.g. load taken from the labels)."""

    @property
    def complete(self) -> bool:
        """True when nothing blocks acting on this server."""
        return not self.problems and self.load is not None

    @property
    def replicas(self) -> int:
        """spec.replicas over all variants."""
        return sum(v.replicas for v in self.variants)


@dataclass(frozen=True)
class Snapshot:
    """Everything one collection saw; dump it with :meth:`to_dict` and replay it with :meth:`from_dict`."""

    taken_at: float
    """Unix time (s) at which the metrics were evaluated."""
    window: str
    """The metrics window (a PromQL duration)."""
    servers: tuple[ObservedServer, ...]
    gpus: dict[str, int] | None = None
    """Allocatable cards per GPU product label; None when the node inventory was not read."""
    problems: tuple[str, ...] = ()
    """Problems of the whole collection (e.g. Deployments that cannot be grouped)."""

    def server(self, name: str) -> ObservedServer | None:
        """The server called ``name``, if it was seen."""
        return next((s for s in self.servers if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the `inferno collect --json` shape)."""
        return dict(_SNAPSHOT.dump_python(self, mode="json"))

    @classmethod
    def from_dict(cls, data: Any) -> Snapshot:
        """A snapshot from :meth:`to_dict` data; ConfigError naming each bad field."""
        try:
            return _SNAPSHOT.validate_python(data)
        except ValidationError as exc:
            raise ConfigError(
                [Problem("snapshot", ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
            ) from exc


_SNAPSHOT = TypeAdapter(Snapshot)


@dataclass(frozen=True)
class ObservedSystem:
    """A configured system with the observed loads and current allocations laid over it."""

    spec: SystemSpec
    flagged: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Server -> why it must be held as it is (its spec entry is left as configured)."""
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Server -> facts worth logging that do not block it."""
    warnings: tuple[str, ...] = ()
    """Problems of the whole system (e.g. GPU products of no known type)."""


Count = Annotated[int, Field(ge=0)]
Seqs = Annotated[int, Field(ge=1)]


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class Action:
    """One change to one Deployment: replicas and, optionally, vLLM's --max-num-seqs."""

    namespace: str
    deployment: str
    server: str
    accelerator: str
    replicas_from: Count
    replicas_to: Count
    max_num_seqs_from: Seqs | None = None
    max_num_seqs_to: Seqs | None = None
    """None = leave --max-num-seqs as it is."""
    reason: str = ""
    resource_version: str = ""
    """The Deployment's resourceVersion when collected; '' = not checked."""
    generation: int | None = None
    """The Deployment's generation when collected; None = not checked."""

    @property
    def changes_max_num_seqs(self) -> bool:
        """True when the action rewrites --max-num-seqs (which restarts every pod)."""
        return self.max_num_seqs_to is not None and self.max_num_seqs_to != self.max_num_seqs_from

    def describe(self) -> str:
        """'ns/deploy: replicas 2->3, max-num-seqs 64->32'."""
        text = f"{self.namespace}/{self.deployment}: replicas {self.replicas_from}->{self.replicas_to}"
        if self.changes_max_num_seqs:
            text += f", max-num-seqs {self.max_num_seqs_from or 'default'}->{self.max_num_seqs_to}"
        return text


Outcome = Literal["applied", "planned", "skipped", "held", "failed"]
"""applied: patched; planned: dry run; skipped: the Deployment changed since collection; held: not tried
because an earlier action of the same server did not apply; failed: the API server refused it."""


@dataclass(frozen=True)
class ActionResult:
    """What became of one action."""

    action: Action
    outcome: Outcome
    detail: str = ""

    def describe(self) -> str:
        """'applied: ns/deploy: replicas 2->3' (with ': detail' when there is one)."""
        text = f"{self.outcome}: {self.action.describe()}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class Actuation:
    """What an actuator did with a list of actions."""

    results: tuple[ActionResult, ...]
    dry_run: bool = False

    def having(self, *outcomes: Outcome) -> tuple[Action, ...]:
        """The actions whose outcome is one of ``outcomes``."""
        return tuple(r.action for r in self.results if r.outcome in outcomes)

    @property
    def complete(self) -> bool:
        """True when every action was applied (or, in a dry run, planned)."""
        return all(r.outcome in ("applied", "planned") for r in self.results)
