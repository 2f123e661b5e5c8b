"""Settings of the daemon: one typed object, filled from defaults, a config file and ``INFERNO_*`` env vars.

This module is the only reader of the process environment.
"""

from __future__ import annotations

import enum
import os
import types
import typing
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
    max_in_transition: int = Field(
        8,
        ge=0,
        description="Most replicas of one server starting at once (not ready yet plus new ones); 0 = no cap.",
    )
    flap_reversals: int = Field(
        3,
        ge=0,
        description="A server whose replica count changed direction this many times within flap_window_s is held "
        "(0 = no flap detection).",
    )
    flap_window_s: float = Field(1800.0, gt=0, description="Window of the flap detection (s).")


class PredictorSettings(BaseModel):
    """Load forecasting per server (see inferno.predictor and docs/predictors.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        False, description="Size each server for the upper bound of its rate forecast instead of the observed rate."
    )
    method: str = Field("last", description="Forecast method: last, ewma, holt-winters or kalman.")
    startup_s: float = Field(
        120.0, ge=0, description="Start-up time of a replica (s); the forecast horizon is this plus one period."
    )
    quantile: float = Field(
        0.9, ge=0.5, lt=1, description="Quantile of the upper prediction bound the optimizer may size for."
    )
    ewma_alpha: float = Field(0.3, gt=0, le=1, description="ewma: smoothing weight of the newest sample.")
    hw_alpha: float = Field(0.2, gt=0, le=1, description="holt-winters: level smoothing weight.")
    hw_beta: float = Field(0.02, ge=0, le=1, description="holt-winters: trend smoothing weight.")
    hw_gamma: float = Field(0.1, ge=0, le=1, description="holt-winters: seasonal smoothing weight.")
    season_s: float = Field(86400.0, gt=0, description="holt-winters: season length (s); one day.")
    history_s: float = Field(
        172800.0, gt=0, description="History kept per series (s); two seasons let holt-winters see the season twice."
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
    predictor: PredictorSettings = Field(
        default_factory=lambda: PredictorSettings(),
        description="Load forecasting; env vars INFERNO_PREDICTOR__<NAME>, e.g. INFERNO_PREDICTOR__METHOD.",
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


# --- the configuration reference (docs/reference/*.md) --------------------------------------------

REFERENCE_HEADER = "_Generated by `inferno schema --reference docs/reference` from the models; do not edit._"


def reference_docs() -> dict[str, str]:
    """The Markdown configuration reference, file name -> text, generated from Settings and the system models.

    ``settings.md`` lists every setting with its env var, type, default and meaning; ``system.md`` every
    key of inferno's system document. ``inferno schema --reference DIR`` writes them; a test keeps the
    copies in docs/reference equal to this.
    """
    from inferno.spec import SystemConfig

    return {"settings.md": _settings_reference(), "system.md": _system_reference(SystemConfig)}


def _settings_reference() -> str:
    lines = [
        REFERENCE_HEADER,
        "",
        "# Settings reference",
        "",
        "Every setting of `inferno run` (`inferno.config.Settings`). Each is the environment variable",
        f"`{ENV_PREFIX}<NAME>` (upper case), a key of the `--config` YAML file, and for the common ones a command-line",
        "option; options override the environment, which overrides the file. List settings are comma-separated",
        "in environment variables. See [configuration.md](../configuration.md) for how they fit together.",
        "",
        "| setting | env var | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in Settings.model_fields.items():
        annotation = _unwrap(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((name, annotation))
            default, type_text = "see below", f"[{annotation.__name__}](#{name})"
        else:
            default, type_text = _default_text(info), _type_text(info.annotation, info.metadata)
        env = f"`{ENV_PREFIX}{name.upper()}`"
        lines.append(f"| `{name}` | {env} | {type_text} | {default} | {_prose(info.description)} |")
    for name, model in nested:
        lines += [
            "",
            f"## {name}",
            "",
            _prose(model.__doc__),
            f"Environment variables `{ENV_PREFIX}{name.upper()}__<NAME>`; in the YAML file, a mapping under `{name}`.",
            "",
            "| setting | env var | type | default | meaning |",
            "|---|---|---|---|---|",
        ]
        for sub, info in model.model_fields.items():
            env = f"`{ENV_PREFIX}{name.upper()}__{sub.upper()}`"
            lines.append(
                f"| `{name}.{sub}` | {env} | {_type_text(info.annotation, info.metadata)} | {_default_text(info)} "
                f"| {_prose(info.description)} |"
            )
    return "\n".join(lines) + "\n"


def _system_reference(root: type[BaseModel]) -> str:
    lines = [
        REFERENCE_HEADER,
        "",
        "# System document reference",
        "",
        "Every key of inferno's flat system document (YAML or JSON, e.g. `config/samples/small.yaml`), from the",
        "models in `inferno.spec`. Keys match case-insensitively and unknown keys are rejected; a key without a",
        "default is required. Units: times in ms, arrival rates in requests per minute, throughput in tokens/s,",
        "cost in cents per hour. The JSON Schemas are in `config/schema/`; the reference layout of the",
        "predecessor is described in [configuration.md](../configuration.md).",
    ]
    models: list[type[BaseModel]] = []
    _collect_models(root, models)
    for model in models:
        lines += [
            "",
            f"## {model.__name__}",
            "",
            _prose(model.__doc__),
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for name, info in model.model_fields.items():
            key = info.alias or name
            type_text = _type_text(info.annotation, info.metadata)
            lines.append(f"| `{key}` | {type_text} | {_default_text(info)} | {_prose(info.description)} |")
    return "\n".join(lines) + "\n"


def _collect_models(model: type[BaseModel], found: list[type[BaseModel]]) -> None:
    """``model`` and every model its fields hold, depth first, each once."""
    if model in found:
        return
    found.append(model)
    for info in model.model_fields.values():
        for inner in _leaves(info.annotation):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                _collect_models(inner, found)


def _leaves(annotation: Any) -> list[Any]:
    """The plain types inside an annotation (through Annotated, unions and containers)."""
    args = typing.get_args(annotation)
    if not args or typing.get_origin(annotation) is Literal:
        return [annotation]
    return [leaf for arg in args for leaf in _leaves(arg)]


def _unwrap(annotation: Any) -> Any:
    """The annotation without Annotated[...] metadata."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _type_text(annotation: Any, metadata: list[Any] | None = None) -> str:
    """A person's words for a field type, with its constraints."""
    extra = list(metadata or ())
    while typing.get_origin(annotation) is Annotated:
        annotation, *more = typing.get_args(annotation)
        extra += more
    text = _plain_type(annotation)
    limits = _constraints(extra)
    return f"{text} ({limits})" if limits else text


def _plain_type(annotation: Any) -> str:
    annotation = _unwrap(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        text = " or ".join(_plain_type(a) for a in kept)
        return f"{text} or none" if len(kept) < len(args) else text
    if origin in (tuple, list):
        return f"list of {_plain_type(args[0])}" if args else "list"
    if origin is dict:
        return f"map {_plain_type(args[0])} -> {_plain_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _constraints(metadata: list[Any]) -> str:
    words = []
    for item in metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attr, None)
            if value is not None:
                words.append(f"{sign} {value}")
        if getattr(item, "min_length", None):
            words.append(f"at least {item.min_length}")
        if getattr(item, "pattern", None):
            words.append(f"matches `{_cell(item.pattern)}`")
    return ", ".join(words)


def _default_text(info: Any) -> str:
    """The default of a field as it reads in a file; 'required' when there is none."""
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.is_required():
        return "required"
    else:
        value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, BaseModel):
        return "see below" if value.model_fields_set else "all defaults"
    if isinstance(value, tuple | list):
        return f"`{','.join(map(str, value))}`" if value else "empty"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if value == "":
        return '`""`'
    return f"`{_cell(str(value))}`"


def _prose(text: str | None) -> str:
    """Prose fit for one Markdown table cell: ``<`` escaped, so that ``<NAME>`` is not read as HTML."""
    return _cell(text).replace("<", "\\<")


def _cell(text: str | None) -> str:
    """Text fit for one Markdown table cell (one line, pipes escaped)."""
    return " ".join((text or "").split()).replace("|", "\\|")
