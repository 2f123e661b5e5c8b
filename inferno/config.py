"""Settings of the daemon: one typed object, filled from defaults, a config file and ``INFERNO_*`` env vars.

This module is the only reader of the process environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from inferno.errors import ConfigError, Problem

ENV_PREFIX = "INFERNO_"


class LimitSettings(BaseModel):
    """Safety limits applied between the optimizer and the actuator (see inferno.limits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scale_down_window_s: float = Field(300.0, ge=0, description="Scale-down stabilisation window (s).")
    max_scale_down_percent: float = Field(
        50.0, gt=0, le=100, description="Most replicas a variant may lose in one cycle, in % (at least 1)."
    )
    max_num_seqs_hysteresis: float = Field(
        0.25, ge=0, description="Smallest relative change of --max-num-seqs worth a rolling restart."
    )
    max_num_seqs_cooldown_s: float = Field(
        1800.0, ge=0, description="Least time between two --max-num-seqs changes of a variant (s)."
    )


def _split_commas(value: Any) -> Any:
    """'a, b' -> ('a', 'b'): list settings are comma-separated in env vars."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


Names = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split_commas)]
"""A list setting; its env var is comma-separated (``a,b``)."""
MetricNames = Annotated[Names, Field(min_length=1)]
"""Metric names of one quantity, the first one present wins; at least one."""


class Settings(BaseSettings):
    """Every setting of inferno; each is also the env var ``INFERNO_<NAME>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True)

    system: Path | None = Field(None, description="System file or directory (accelerators, models, classes, ...).")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="Log format; auto = JSON unless stderr is a terminal."
    )

    # --- cluster access and discovery (collector, actuator) ----------------------------------
    kubeconfig: Path | None = Field(
        None, description="Kubeconfig file; none = the in-cluster service account, else the default kubeconfig."
    )
    context: str | None = Field(None, description="Kubeconfig context; none = its current context.")
    kube_timeout: float = Field(10.0, gt=0, description="Timeout of one Kubernetes API request (s).")
    namespaces: Names = Field((), description="Namespaces to manage (comma-separated); empty = all namespaces.")
    label_selector: str = Field(
        "", description="Extra label selector for managed Deployments, ANDed with inferno.server.managed=true."
    )
    vllm_container: str | None = Field(
        None, description="Name of the vLLM container; none = the container whose command line runs vLLM."
    )
    gpu_inventory: bool = Field(
        False, description="Read the GPU inventory from nodes (nvidia.com/gpu.product, allocatable nvidia.com/gpu)."
    )
    gpu_products: dict[str, str] = Field(
        default_factory=dict,
        description="GPU product label -> card type (JSON object); unlisted products match a type by name.",
    )
    dry_run: bool = Field(False, description="Print the planned actions instead of patching Deployments.")

    # --- Prometheus -------------------------------------------------------------------------
    prometheus_url: str | None = Field(
        None, description="Prometheus base URL; none = no metrics (load from the inferno.server.load.* labels)."
    )
    prometheus_token_file: Path | None = Field(None, description="File holding a bearer token for Prometheus.")
    prometheus_ca_file: Path | None = Field(None, description="CA bundle that verifies Prometheus' certificate.")
    prometheus_tls_verify: bool = Field(True, description="Verify Prometheus' TLS certificate.")
    prometheus_timeout: float = Field(
        5.0, gt=0, description="Time budget of all Prometheus queries of one collection, retries included (s)."
    )
    prometheus_retries: int = Field(2, ge=0, description="Retries of a failed Prometheus query (within the budget).")
    metrics_window: str = Field(
        "1m", pattern=r"^[0-9]+(ms|s|m|h)$", description="Window of rates and means (a PromQL duration)."
    )
    namespace_label: str = Field("namespace", description="Prometheus label that holds a pod's namespace.")
    pod_label: str = Field("pod", description="Prometheus label that holds a pod's name.")
    query_rate: str = Field(
        "sum by ($by) (rate($metric$selector[$window]))",
        description="PromQL template of per-pod counter rates ($metric, $selector, $window, $by).",
    )
    query_gauge: str = Field(
        "$agg by ($by) (avg_over_time($metric$selector[$window]))",
        description="PromQL template of per-pod gauge means ($agg is sum, or avg for the KV-cache use).",
    )
    query_growth: str = Field(
        "sum by ($by) (deriv($metric$selector[$window]))",
        description="PromQL template of per-pod gauge growth per second (waiting queue).",
    )
    metric_requests: MetricNames = Field(
        ("vllm:request_success_total",), description="Counter of finished requests; the first name present wins."
    )
    metric_prompt_tokens: MetricNames = Field(
        ("vllm:request_prompt_tokens",), description="Histogram of input tokens per request."
    )
    metric_generation_tokens: MetricNames = Field(
        ("vllm:request_generation_tokens",), description="Histogram of output tokens per request."
    )
    metric_ttft: MetricNames = Field(("vllm:time_to_first_token_seconds",), description="Histogram of TTFT (s).")
    metric_itl: MetricNames = Field(
        ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
        description="Histogram of inter-token latency (s); the second is the pre-V1 name.",
    )
    metric_running: MetricNames = Field(("vllm:num_requests_running",), description="Gauge of requests in the batch.")
    metric_waiting: MetricNames = Field(("vllm:num_requests_waiting",), description="Gauge of queued requests.")
    metric_kv_cache: MetricNames = Field(
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        description="Gauge of KV-cache use (0-1); the second is the pre-V1 name.",
    )

    # --- the control loop (controller, optimizer, limits) -------------------------------------
    period: float = Field(60.0, gt=0, description="Seconds between the starts of two cycles.")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Port of /metrics, /healthz and /readyz (0 = off).")
    decision_log: Path | None = Field(None, description="Append one JSON line per cycle to this file.")
    solver: str = Field("milp", description="Solver: milp, greedy or unlimited.")
    queue_model: str = Field("iteration", description="Queue model: iteration, inferno-2025 or mm1k.")
    batch_policy: str = Field("optimal", description="Max batch choice: optimal or reference.")
    heterogeneous: bool | None = Field(None, description="Mix accelerators per server; none = the system's setting.")
    milp_time_limit: float = Field(10.0, gt=0, description="MILP time limit (s); greedy answers when it runs out.")
    milp_gap: float = Field(1e-3, ge=0, description="MILP relative optimality gap.")
    tune: bool = Field(True, description="Tune the queue-model parameters online from what the servers report.")
    tuner_state: Path | None = Field(None, description="JSON file that keeps the tuner state across restarts.")
    tuner_configmap: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="NAMESPACE/NAME of a ConfigMap keeping the tuner state in-cluster (instead of tuner_state).",
    )
    leader_elect: bool = Field(False, description="Lead through a Lease, so only one of several replicas acts.")
    leader_namespace: str = Field("inferno-system", description="Namespace of the leader Lease.")
    leader_lease: str = Field("inferno-leader", description="Name of the leader Lease.")
    limits: LimitSettings = Field(
        default_factory=lambda: LimitSettings(),
        description="Safety limits; env vars INFERNO_LIMITS__<NAME>, e.g. INFERNO_LIMITS__SCALE_DOWN_WINDOW_S.",
    )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, then ``config_file`` (YAML), then the environment, then ``overrides`` (CLI options).

    Raises ConfigError naming the file key, env var or option of each bad value.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    from_file: dict[str, Any] = {}
    if config_file is not None:
        from_file = _read_config_file(config_file)
        shadowed = {k.lower() for k in os.environ if k.upper().startswith(ENV_PREFIX)}
        from_file = {k: v for k, v in from_file.items() if f"{ENV_PREFIX}{k}".lower() not in shadowed}
    try:
        return Settings(**{**from_file, **given})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            name = ".".join(str(p) for p in err["loc"])
            top = str(err["loc"][0]) if err["loc"] else name
            if top in given:
                problems.append(Problem("settings", "option --" + name.replace("_", "-"), err["msg"]))
            elif top in from_file:
                problems.append(Problem(str(config_file), name, err["msg"]))
            else:
                problems.append(Problem("settings", f"{ENV_PREFIX}{name.upper().replace('.', '__')}", err["msg"]))
        raise ConfigError(problems) from exc


def _read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a YAML file (keys are setting names); ConfigError when unreadable."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError([Problem(str(path), "", f"cannot read: {exc.strerror or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(str(path), "", f"invalid YAML: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ConfigError([Problem(str(path), "", "expected a mapping of setting names to values")])
    return {str(k).replace("-", "_"): v for k, v in data.items()}
