"""The Optimizer custom resource (``inferno.ai/v1alpha1``): its spec and status as pydantic models, and its CRD.

An Optimizer declares a system (inline, in the shape of inferno's flat system document, or a key of a
ConfigMap), how to optimize it, which managed Deployments it covers and whether to only advise (write the
plan into its status) or apply it. ``inferno run --mode reconcile`` (:mod:`inferno.reconcile`) acts on it.

The CRD's OpenAPI v3 schema is generated from the same models (:func:`crd_manifest`, ``inferno schema
--crd``), so the API server checks the shapes inferno reads; ``deploy/crd/optimizers.inferno.ai.yaml`` is
that output and a test keeps it equal. The generated schema is *structural*: no ``$ref``, a ``type`` on
every node, no ``additionalProperties`` beside ``properties``; optional fields are left out, never null.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, Field, model_validator

from inferno.spec import Name, SaturationPolicy, Spec, SystemConfig

GROUP = "inferno.ai"
VERSION = "v1alpha1"
KIND = "Optimizer"
PLURAL = "optimizers"
SINGULAR = "optimizer"
API_VERSION = f"{GROUP}/{VERSION}"

Mode = Literal["advise", "apply"]
"""advise: write the plan into the status only; apply: also scale the Deployments."""
SolverName = Literal["milp", "greedy", "unlimited"]
QueueModelName = Literal["iteration", "inferno-2025", "mm1k"]
BatchPolicyName = Literal["optimal", "reference"]

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
"""A duration as Kubernetes writes them: '90s', '5m', '1h30m'."""
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MIN_PERIOD_S = 10.0
"""Shortest period an Optimizer may ask for."""


def duration_seconds(text: str) -> float:
    """'1h30m' -> 5400.0 (the text must match :data:`DURATION`)."""
    return sum(float(number) * _UNIT_S[unit] for number, unit in _DURATION_PART.findall(text))


# --- spec ---------------------------------------------------------------------------------------


class SystemRef(Spec):
    """A system kept under one key of a ConfigMap in the Optimizer's namespace."""

    config_map: Name = Field(alias="configMap", description="Name of the ConfigMap (in the Optimizer's namespace).")
    key: Name = Field(
        "system.yaml",
        description="Key holding the system: inferno's flat YAML/JSON document or a reference system-data.json.",
    )


class ServerScope(Spec):
    """Which managed Deployments (label inferno.server.managed=true) the Optimizer collects and scales."""

    namespaces: tuple[Name, ...] = Field(
        (), description="Namespaces of the Deployments; empty = the Optimizer's own namespace."
    )
    label_selector: str = Field(
        "", alias="labelSelector", description="Label selector ANDed with inferno.server.managed=true."
    )


class OptimizerSettings(Spec):
    """How to optimize; a field left out takes the operator's setting, or the system's optimizer data."""

    solver: SolverName | None = Field(None, description="Solver; default: the operator's INFERNO_SOLVER.")
    queue_model: QueueModelName | None = Field(
        None, alias="queueModel", description="Queue model; default: the operator's INFERNO_QUEUE_MODEL."
    )
    batch_policy: BatchPolicyName | None = Field(
        None, alias="batchPolicy", description="Max batch choice; default: the operator's INFERNO_BATCH_POLICY."
    )
    unlimited: bool | None = Field(None, description="Ignore the capacity; default: the system's optimizer data.")
    heterogeneous: bool | None = Field(
        None, description="Mix accelerator types per server; default: the operator's setting, else the system's."
    )
    saturation_policy: SaturationPolicy | None = Field(
        None, alias="saturationPolicy", description="Greedy: sharing of capacity when short; default: the system's."
    )
    delayed_best_effort: bool | None = Field(
        None, alias="delayedBestEffort", description="Greedy: serve lower priorities only after all higher ones."
    )
    time_limit_seconds: float | None = Field(
        None, alias="timeLimitSeconds", gt=0, description="MILP time limit (s); default: INFERNO_MILP_TIME_LIMIT."
    )
    tune: bool = Field(
        False,
        description="Tune the queue-model parameters online from the servers' metrics (kept in memory, "
        "started afresh when the spec changes).",
    )


class OptimizerResourceSpec(Spec):
    """The desired state of an Optimizer: a system, how to optimize it, what it covers, advise or apply."""

    mode: Mode = Field("advise", description="advise: write the plan into the status only; apply: also scale.")
    period: str | None = Field(
        None,
        pattern=DURATION,
        description="Run again this long after the last run (e.g. '5m'); none = only when the input changes.",
    )
    system: SystemConfig | None = Field(None, description="The system, inline (inferno's flat system document).")
    system_ref: SystemRef | None = Field(None, alias="systemRef", description="The system, kept in a ConfigMap.")
    settings: OptimizerSettings = Field(default_factory=OptimizerSettings, description="How to optimize.")
    servers: ServerScope = Field(default_factory=ServerScope, description="The managed Deployments covered.")

    @model_validator(mode="after")
    def _one_system(self) -> Self:
        if (self.system is None) == (self.system_ref is None):
            raise ValueError("give exactly one of system (inline) and systemRef (a ConfigMap)")
        if self.period is not None and duration_seconds(self.period) < MIN_PERIOD_S:
            raise ValueError(f"period {self.period!r} is shorter than {MIN_PERIOD_S:g}s")
        return self

    @property
    def period_s(self) -> float | None:
        """The period in seconds (None when not set)."""
        return None if self.period is None else duration_seconds(self.period)


# --- status -------------------------------------------------------------------------------------

ConditionType = Literal["Ready", "Optimized", "Applied", "Degraded"]
CONDITION_TYPES: tuple[ConditionType, ...] = ("Ready", "Optimized", "Applied", "Degraded")
_DATE_TIME: dict[str, Any] = {"format": "date-time"}


class Condition(Spec):
    """One aspect of the Optimizer's state, in the Kubernetes condition shape."""

    type: ConditionType = Field(description="Ready, Optimized, Applied or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word: why.")
    message: str = Field("", description="What happened, for a person.")
    last_transition_time: str = Field(
        alias="lastTransitionTime", description="When status last changed (RFC 3339).", json_schema_extra=_DATE_TIME
    )
    observed_generation: int = Field(
        0, alias="observedGeneration", ge=0, description="metadata.generation this condition is about."
    )


class VariantStatus(Spec):
    """Replicas of one accelerator configuration in a server's allocation."""

    accelerator: str = Field(description="Accelerator configuration.")
    replicas: int = Field(ge=0, description="Replicas.")
    max_batch: int = Field(0, alias="maxBatch", ge=0, description="Max batch size (vLLM --max-num-seqs).")


class ServerAllocation(Spec):
    """The last allocation of one server."""

    server: str = Field(description="Server name.")
    accelerator: str = Field("", description="Accelerator with the most replicas ('' = none).")
    replicas: int = Field(0, ge=0, description="Replicas over all variants.")
    max_batch: int = Field(0, alias="maxBatch", ge=0, description="Max batch size of the main variant.")
    cost: float = Field(0.0, ge=0, description="Cost (cents per hour).")
    ttft_ms: float = Field(0.0, alias="ttftMs", ge=0, description="Predicted mean time to first token (ms).")
    itl_ms: float = Field(0.0, alias="itlMs", ge=0, description="Predicted mean inter-token latency (ms).")
    unmet_rps: float = Field(0.0, alias="unmetRps", ge=0, description="Demand left unserved (requests/s).")
    variants: tuple[VariantStatus, ...] = Field((), description="Every accelerator configuration used.")
    reason: str = Field("", description="Why the server is not (fully) served, when it is not.")


class OptimizerStatus(Spec):
    """The observed state of an Optimizer: conditions and the last plan."""

    observed_generation: int | None = Field(
        None, alias="observedGeneration", ge=0, description="metadata.generation of the last completed run."
    )
    conditions: tuple[Condition, ...] = Field(
        (),
        description="Ready, Optimized, Applied, Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    allocations: tuple[ServerAllocation, ...] = Field(
        (),
        description="The last allocation of each server.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["server"]},
    )
    total_cost: float | None = Field(None, alias="totalCost", ge=0, description="Cost of the plan (cents per hour).")
    solver: str = Field("", description="Solver and its status, e.g. 'milp (optimal)'.")
    solve_time_ms: float | None = Field(None, alias="solveTimeMs", ge=0, description="Time the solver took (ms).")
    last_run_time: str | None = Field(
        None, alias="lastRunTime", description="When the last run started (RFC 3339).", json_schema_extra=_DATE_TIME
    )
    outcome: str = Field("", description="Of the last run: ok, idle, skipped, failed or invalid.")
    actions: tuple[str, ...] = Field((), description="Actions of the last run and what became of each.")
    input_digest: str = Field(
        "", alias="inputDigest", description="SHA-256 of the spec and referenced system of the last completed run."
    )


# --- the CRD ------------------------------------------------------------------------------------

CRD_HEADER = "# Generated by `inferno schema --crd` from inferno/crd.py; do not edit.\n"
CRD_NAME = f"{PLURAL}.{GROUP}"

_KEPT = (
    "type",
    "description",
    "format",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "required",
)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (as a CRD holds it), from its JSON Schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}), where=model.__name__)


def _structural(node: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    """One JSON Schema node as structural OpenAPI: references inlined, nullable unions collapsed."""
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, where)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"{where}: only X | None unions have a structural form")
        outer = {k: v for k, v in node.items() if k not in ("anyOf", "default", "title")}
        return _structural({**branches[0], **outer}, defs, where)
    out: dict[str, Any] = {k: node[k] for k in _KEPT if k in node}
    if "exclusiveMinimum" in node:  # JSON Schema 2020-12 number -> OpenAPI 3.0 boolean form
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if "enum" in node and "type" not in node:
        out["type"] = "string"
    if "properties" in node:
        out["type"] = "object"
        out["properties"] = {
            key: _structural(value, defs, f"{where}.{key}") for key, value in node["properties"].items()
        }
    elif isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(node["additionalProperties"], defs, f"{where}[*]")
    if "items" in node:
        out["items"] = _structural(node["items"], defs, f"{where}[]")
    out.update({k: v for k, v in node.items() if k.startswith("x-kubernetes-")})
    if "type" not in out:
        raise ValueError(f"{where}: no type (a structural schema needs one everywhere)")
    return out


def resource_schema() -> dict[str, Any]:
    """The openAPIV3Schema of an Optimizer: apiVersion, kind, metadata, spec, status."""
    spec = openapi_schema(OptimizerResourceSpec)
    spec["oneOf"] = [{"required": ["system"]}, {"required": ["systemRef"]}]
    return {
        "type": "object",
        "description": (
            "An Optimizer: inferno plans accelerators, replicas and max batch size for the servers of a "
            "system, writes the plan into the status, and in apply mode scales the Deployments."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "inferno.ai/v1alpha1."},
            "kind": {"type": "string", "description": "Optimizer."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": openapi_schema(OptimizerStatus),
        },
    }


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition of Optimizer (apiextensions.k8s.io/v1)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "inferno", "app.kubernetes.io/part-of": "inferno"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "categories": ["inferno"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {"name": "Cost", "type": "number", "jsonPath": ".status.totalCost"},
                        {"name": "Last run", "type": "date", "jsonPath": ".status.lastRunTime"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": resource_schema()},
                }
            ],
        },
    }


def crd_yaml() -> str:
    """The CRD as the YAML file kept in deploy/crd/ (a header line, then the manifest)."""
    return CRD_HEADER + yaml.safe_dump(crd_manifest(), sort_keys=False, width=120)
