"""pydantic v2 models of inferno's JSON interface.

They mirror the llm-inferno data formats (accelerators, capacity, model
performance data, service classes, servers, optimizer settings, allocation
solutions) so that its sample data load unchanged, plus the few fields inferno
adds. Every model is frozen and rejects unknown keys. Keys are matched
case-insensitively, as Go's ``encoding/json`` does and the sample data rely on
(``"milpsolver"``, ``"AvgInTokens"``); output always uses the canonical
spelling (the field alias).

Units: times in milliseconds, arrival rates in requests per **minute** (the
reference unit), throughput targets in tokens per second, memory in GB,
bandwidth in GB/s, cost in cents per hour.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1)]

DEFAULT_CLASS = "Free"
"""Service class of a server that names none."""

DEFAULT_PRIORITY = 100
"""Priority of a service class that names none (1 is the most important)."""


@cache
def _key_map(model: type[BaseModel]) -> dict[str, str]:
    """Lower-cased alias or field name of ``model`` -> the canonical key (the alias)."""
    keys: dict[str, str] = {}
    for name, info in model.model_fields.items():
        canonical = info.alias or name
        keys[name.lower()] = canonical
        keys[canonical.lower()] = canonical
    return keys


class Spec(BaseModel):
    """Base of every interface model: frozen, strict about keys, case-insensitive on them."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_enum_values=False,
    )

    @model_validator(mode="before")
    @classmethod
    def _fold_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        keys = _key_map(cls)
        out: dict[Any, Any] = {}
        for key, value in data.items():
            canonical = keys.get(key.lower(), key) if isinstance(key, str) else key
            if canonical in out:
                raise ValueError(f"key {key!r} is given twice (keys are case-insensitive)")
            out[canonical] = value
        return out


# --- accelerators and capacity ------------------------------------------------------------


class PowerSpec(Spec):
    """Power draw of an accelerator configuration (watts)."""

    idle: NonNegFloat = Field(0.0, description="Power at idle (W).")
    full: NonNegFloat = Field(0.0, description="Power at full utilisation (W).")
    mid_power: NonNegFloat = Field(0.0, alias="midPower", description="Power at midUtil (W).")
    mid_util: float = Field(0.0, alias="midUtil", ge=0, le=1, description="Utilisation of the mid point (0-1).")


class AcceleratorSpec(Spec):
    """An accelerator configuration, e.g. ``2xA100``: `multiplicity` cards of one `type`."""

    name: Name = Field(description="Configuration name, unique, e.g. '2xA100'.")
    type: Name = Field(description="Card type counted in the capacity, e.g. 'A100'.")
    multiplicity: int = Field(1, ge=1, description="Cards of `type` in one configuration.")
    mem_size: NonNegFloat = Field(0.0, alias="memSize", description="Memory per card (GB).")
    mem_bw: NonNegFloat = Field(0.0, alias="memBW", description="Memory bandwidth per card (GB/s).")
    power: PowerSpec = Field(default_factory=PowerSpec, description="Power draw.")
    cost: NonNegFloat = Field(description="Cost of the whole configuration (cents per hour).")


class AcceleratorData(Spec):
    """Contents of accelerator-data.json."""

    accelerators: tuple[AcceleratorSpec, ...] = ()


class AcceleratorCount(Spec):
    """Number of cards of one type in the inventory."""

    type: Name = Field(description="Card type, as in AcceleratorSpec.type.")
    count: int = Field(ge=0, description="Cards available.")


class CapacityData(Spec):
    """Contents of capacity-data.json: the accelerator inventory in cards."""

    count: tuple[AcceleratorCount, ...] = ()


# --- model performance data ---------------------------------------------------------------


class DecodeParms(Spec):
    """2025 decode model: ITL at batch n is alpha + beta * n (ms)."""

    alpha: NonNegFloat = Field(description="Decode time at batch 0 (ms).")
    beta: NonNegFloat = Field(description="Decode time added per request in the batch (ms).")


class PrefillParms(Spec):
    """2025 prefill model: prefill time is gamma + delta * inTokens * n (ms)."""

    gamma: NonNegFloat = Field(description="Fixed prefill time (ms).")
    delta: NonNegFloat = Field(description="Prefill time per input token per request in the batch (ms).")


class PerfParms(Spec):
    """2026 iteration model: iteration time alpha + beta * computed tokens + gamma * KV tokens read (ms)."""

    alpha: NonNegFloat = Field(description="Per-iteration overhead (ms).")
    beta: NonNegFloat = Field(description="Compute time per token computed (ms).")
    gamma: NonNegFloat = Field(description="KV-cache read time per token read (ms).")


DEFAULT_MAX_BATCHED_TOKENS = 8192
"""vLLM's default ``max_num_batched_tokens`` (tokens per iteration)."""


class ModelAcceleratorPerfData(Spec):
    """Performance of one model on one accelerator configuration."""

    name: Name = Field(description="Model (LLM) name.")
    acc: Name = Field(description="Accelerator configuration name.")
    acc_count: int = Field(1, alias="accCount", ge=1, description="Configurations per replica.")
    max_batch_size: int = Field(alias="maxBatchSize", ge=1, description="Max batch size at `atTokens` tokens.")
    at_tokens: int = Field(alias="atTokens", ge=1, description="Tokens per request at which maxBatchSize holds.")
    decode_parms: DecodeParms | None = Field(None, alias="decodeParms", description="2025 decode parameters.")
    prefill_parms: PrefillParms | None = Field(None, alias="prefillParms", description="2025 prefill parameters.")
    perf_parms: PerfParms | None = Field(None, alias="perfParms", description="2026 iteration parameters.")
    max_num_batched_tokens: int = Field(
        DEFAULT_MAX_BATCHED_TOKENS,
        alias="maxNumBatchedTokens",
        ge=1,
        description="Max tokens per iteration (vLLM max_num_batched_tokens); inferno extension.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.decode_parms is None) != (self.prefill_parms is None):
            raise ValueError("decodeParms and prefillParms must be given together")
        if self.decode_parms is None and self.perf_parms is None:
            raise ValueError("give decodeParms+prefillParms (2025 form) or perfParms (2026 form)")
        return self


class ModelData(Spec):
    """Contents of model-data.json."""

    models: tuple[ModelAcceleratorPerfData, ...] = ()


# --- service classes ----------------------------------------------------------------------


class ModelTarget(Spec):
    """SLO targets of one model in a service class; 0 means not set."""

    model: Name = Field(description="Model (LLM) name.")
    slo_itl: NonNegFloat = Field(0.0, alias="slo-itl", description="Mean inter-token latency target (ms).")
    slo_ttft: NonNegFloat = Field(0.0, alias="slo-ttft", description="Mean time-to-first-token target (ms).")
    slo_tps: NonNegFloat = Field(0.0, alias="slo-tps", description="Throughput target (tokens/s).")


class ServiceClassSpec(Spec):
    """A service class: a priority and per-model SLO targets."""

    name: Name = Field(description="Class name, unique.")
    priority: int = Field(DEFAULT_PRIORITY, ge=1, le=100, description="1 = most important .. 100.")
    model_targets: tuple[ModelTarget, ...] = Field((), alias="modelTargets", description="Targets per model.")


class ServiceClassData(Spec):
    """Contents of serviceclass-data.json."""

    service_classes: tuple[ServiceClassSpec, ...] = Field((), alias="serviceClasses")


# --- servers and allocations --------------------------------------------------------------


class LoadSpec(Spec):
    """Offered load of a server."""

    arrival_rate: NonNegFloat = Field(0.0, alias="arrivalRate", description="Request rate (requests per minute).")
    avg_in_tokens: NonNegFloat = Field(0.0, alias="avgInTokens", description="Mean input tokens per request.")
    avg_out_tokens: NonNegFloat = Field(0.0, alias="avgOutTokens", description="Mean output tokens per request.")


class AllocationData(Spec):
    """An allocation of a server: accelerator, replicas, batch size, cost and expected latency."""

    accelerator: str = Field("", description="Accelerator configuration name ('' = none).")
    num_replicas: int = Field(0, alias="numReplicas", ge=0, description="Replicas.")
    max_batch: int = Field(0, alias="maxBatch", ge=0, description="Max batch size (vLLM --max-num-seqs).")
    cost: NonNegFloat = Field(0.0, description="Cost of the allocation (cents per hour).")
    itl_average: NonNegFloat = Field(0.0, alias="itlAverage", description="Mean inter-token latency (ms).")
    ttft_average: NonNegFloat = Field(0.0, alias="ttftAverage", description="Mean time to first token (ms).")
    load: LoadSpec = Field(default_factory=LoadSpec, description="Load the allocation serves.")


class ServerSpec(Spec):
    """An inference server: one model served in one service class."""

    name: Name = Field(description="Server name, unique.")
    class_name: Name = Field(DEFAULT_CLASS, alias="class", description="Service class name.")
    model: Name = Field(description="Model (LLM) name.")
    keep_accelerator: bool = Field(False, alias="keepAccelerator", description="Stay on the current accelerator.")
    min_num_replicas: int = Field(0, alias="minNumReplicas", ge=0, description="Min replicas (0 allows scale to zero).")
    max_num_replicas: int = Field(
        0, alias="maxNumReplicas", ge=0, description="Max replicas (0 = no limit); inferno extension."
    )
    max_batch_size: int = Field(0, alias="maxBatchSize", ge=0, description="Max batch override (0 = none).")
    max_queue_size: int = Field(0, alias="maxQueueSize", ge=0, description="Max waiting queue (0 = default).")
    current_alloc: AllocationData = Field(
        default_factory=AllocationData, alias="currentAlloc", description="Current allocation and observed load."
    )
    desired_alloc: AllocationData | None = Field(None, alias="desiredAlloc", description="Last desired allocation.")

    @model_validator(mode="after")
    def _replica_bounds(self) -> Self:
        if self.max_num_replicas and self.max_num_replicas < self.min_num_replicas:
            raise ValueError(
                f"maxNumReplicas ({self.max_num_replicas}) is below minNumReplicas ({self.min_num_replicas})"
            )
        return self


class ServerData(Spec):
    """Contents of server-data.json."""

    servers: tuple[ServerSpec, ...] = ()


# --- optimizer settings -------------------------------------------------------------------


class SaturationPolicy(StrEnum):
    """How spare capacity is shared among servers that could not be fully served."""

    NONE = "None"
    PRIORITY_EXHAUSTIVE = "PriorityExhaustive"
    PRIORITY_ROUND_ROBIN = "PriorityRoundRobin"
    ROUND_ROBIN = "RoundRobin"


class OptimizerSpec(Spec):
    """Optimizer settings of the reference format."""

    unlimited: bool = Field(False, description="Ignore the capacity.")
    heterogeneous: bool = Field(False, description="Allow a mix of accelerator types per server.")
    milp_solver: bool = Field(False, alias="milpSolver", description="Use the MILP solver (reference flag).")
    use_cplex: bool = Field(False, alias="useCplex", description="Reference flag; ignored (inferno uses HiGHS).")
    delayed_best_effort: bool = Field(
        False, alias="delayedBestEffort", description="Serve lower priorities only after all higher ones."
    )
    saturation_policy: SaturationPolicy = Field(
        SaturationPolicy.NONE, alias="saturationPolicy", description="Sharing of capacity when short."
    )


class OptimizerData(Spec):
    """Contents of optimizer-data.json."""

    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


# --- whole systems ------------------------------------------------------------------------


class SystemSpec(Spec):
    """A whole system in the reference layout (the value of ``system`` in system-data.json)."""

    accelerator_data: AcceleratorData = Field(default_factory=AcceleratorData, alias="acceleratorData")
    capacity_data: CapacityData = Field(default_factory=CapacityData, alias="capacityData")
    model_data: ModelData = Field(default_factory=ModelData, alias="modelData")
    service_class_data: ServiceClassData = Field(default_factory=ServiceClassData, alias="serviceClassData")
    server_data: ServerData = Field(default_factory=ServerData, alias="serverData")
    optimizer_data: OptimizerData = Field(default_factory=OptimizerData, alias="optimizerData")


class SystemDocument(Spec):
    """system-data.json: ``{"system": {...}}``."""

    system: SystemSpec


class SystemConfig(Spec):
    """inferno's own flat system document (YAML or JSON)."""

    accelerators: tuple[AcceleratorSpec, ...] = Field(description="Accelerator configurations.")
    capacity: tuple[AcceleratorCount, ...] = Field((), description="Cards available per type.")
    models: tuple[ModelAcceleratorPerfData, ...] = Field(description="Performance data per (model, accelerator).")
    service_classes: tuple[ServiceClassSpec, ...] = Field((), alias="serviceClasses", description="Service classes.")
    servers: tuple[ServerSpec, ...] = Field((), description="Inference servers.")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec, description="Optimizer settings.")

    def to_system(self) -> SystemSpec:
        """The same system in the reference layout."""
        return SystemSpec(
            accelerator_data=AcceleratorData(accelerators=self.accelerators),
            capacity_data=CapacityData(count=self.capacity),
            model_data=ModelData(models=self.models),
            service_class_data=ServiceClassData(service_classes=self.service_classes),
            server_data=ServerData(servers=self.servers),
            optimizer_data=OptimizerData(optimizer=self.optimizer),
        )


class AllocationSolution(Spec):
    """The reference solution format: one allocation per server."""

    allocations: dict[str, AllocationData] = Field(default_factory=dict)


SCHEMAS: dict[str, type[Spec]] = {
    "system": SystemConfig,
    "system-data": SystemDocument,
    "accelerator-data": AcceleratorData,
    "capacity-data": CapacityData,
    "model-data": ModelData,
    "serviceclass-data": ServiceClassData,
    "server-data": ServerData,
    "optimizer-data": OptimizerData,
    "allocation-solution": AllocationSolution,
}
"""Exported JSON Schemas by name (``inferno schema NAME``)."""
