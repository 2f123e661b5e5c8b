"""The ``inferno`` command line: each command parses options, calls one layer and prints a table or JSON."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from inferno import __version__
from inferno.actuator import Actuator, DryRunActuator, KubeActuator, read_actions
from inferno.collector import Collector
from inferno.config import Settings, load_settings
from inferno.controller import Controller, CycleRecord, serve
from inferno.errors import ConfigError, InfernoError, Problem
from inferno.k8s import ConfigMapStore, Kube, LeaderElector
from inferno.k8s import connect as connect_kube
from inferno.logs import configure
from inferno.optimizer import SOLVERS, OptimizerOptions, make_solver, optimize, to_solution
from inferno.prometheus import connect as connect_prometheus
from inferno.queueing import DEFAULT_QUEUE_MODEL, QUEUE_MODELS, Targets, Workload, choose_batch, make_queue_model, size
from inferno.spec import SCHEMAS, SaturationPolicy, SystemSpec
from inferno.state import Actuation, Plan, Snapshot
from inferno.system import LoadedSystem, load_system
from inferno.telemetry import HealthServer, Telemetry
from inferno.tuner import EKFTuner, JsonFileStore, TunerStore, read_observations, replay, seeds_from_spec

app = typer.Typer(
    name="inferno",
    help="Cost-aware, SLO-driven autoscaling of LLM inference servers on Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)


def fail(error: InfernoError) -> NoReturn:
    """Print an error for a person (no traceback) and exit 1."""
    lines = str(error).splitlines() or [type(error).__name__]
    err.print(f"error: {lines[0]}", markup=False, highlight=False)
    for line in lines[1:]:
        err.print(f"  {line}", markup=False, highlight=False)
    raise typer.Exit(1)


def print_json(value: object) -> None:
    """JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


@app.callback()
def _root(
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
) -> None:
    try:
        settings = load_settings(log_level=log_level)
    except InfernoError as exc:
        fail(exc)
    configure(settings.log_level, settings.log_format)


@app.command()
def version() -> None:
    """Print the inferno version."""
    out.print(f"inferno {__version__}", highlight=False)


def _summary(loaded: LoadedSystem) -> str:
    spec = loaded.spec
    cards = sum(c.count for c in spec.capacity_data.count)
    models = {m.name for m in spec.model_data.models}
    return (
        f"{len(spec.accelerator_data.accelerators)} accelerators, "
        f"{len(spec.capacity_data.count)} card types ({cards} cards), "
        f"{len(models)} models ({len(spec.model_data.models)} performance rows), "
        f"{len(spec.service_class_data.service_classes)} service classes, "
        f"{len(spec.server_data.servers)} servers"
    )


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="System directory, system-data.json, or inferno YAML/JSON.")],
) -> None:
    """Check a system; exit 0 when valid, 1 with every problem listed otherwise."""
    try:
        loaded = load_system(path)
    except InfernoError as exc:
        problems = getattr(exc, "problems", ())
        err.print(f"invalid: {path} ({len(problems) or 1} problem(s))", markup=False, highlight=False)
        for line in str(exc).splitlines():
            err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    out.print(f"valid: {path}: {_summary(loaded)}", markup=False, highlight=False)


@app.command()
def schema(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(SCHEMAS)}.")] = "system",
    write: Annotated[
        Path | None, typer.Option(help="Write every schema as NAME.schema.json into this directory.")
    ] = None,
) -> None:
    """Print the JSON Schema of an input format (or write all of them)."""
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        for key in SCHEMAS:
            (write / f"{key}.schema.json").write_text(json.dumps(json_schema(key), indent=2) + "\n")
        out.print(f"wrote {len(SCHEMAS)} schemas to {write}", markup=False, highlight=False)
        return
    if name not in SCHEMAS:
        err.print(f"error: unknown schema {name!r}; choose one of: {', '.join(SCHEMAS)}", markup=False)
        raise typer.Exit(1)
    print_json(json_schema(name))


def json_schema(name: str) -> dict[str, object]:
    """The JSON Schema of the input format ``name`` (with $schema and $id set)."""
    body = SCHEMAS[name].model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://inferno.dev/schema/{name}.schema.json",
        **body,
    }


@app.command()
def plan(
    system: Annotated[Path, typer.Argument(help="System directory, system-data.json, or inferno YAML/JSON.")],
    solver: Annotated[str, typer.Option(help=f"One of: {', '.join(SOLVERS)}.")] = "milp",
    queue_model: Annotated[str, typer.Option(help="Queue model: mm1k, inferno-2025 or iteration.")] = "iteration",
    batch_policy: Annotated[str, typer.Option(help="Max batch choice: reference or optimal.")] = "optimal",
    heterogeneous: Annotated[
        bool | None, typer.Option("--heterogeneous/--homogeneous", help="Allow a mix of accelerators per server.")
    ] = None,
    unlimited: Annotated[bool | None, typer.Option("--unlimited/--limited", help="Ignore the capacity.")] = None,
    saturation_policy: Annotated[
        SaturationPolicy | None, typer.Option(help="Greedy: how leftover capacity is shared.")
    ] = None,
    delayed_best_effort: Annotated[
        bool | None, typer.Option("--delayed-best-effort/--no-delayed-best-effort", help="Greedy setting.")
    ] = None,
    time_limit: Annotated[float, typer.Option(help="MILP time limit (s).")] = 10.0,
    gap: Annotated[float, typer.Option(help="MILP relative optimality gap.")] = 1e-3,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    output_format: Annotated[
        str, typer.Option("--format", help="table, json, or inferno (the reference AllocationSolution).")
    ] = "table",
) -> None:
    """Plan accelerators, replicas and max batch size for every server of a system."""
    options = OptimizerOptions(
        solver=solver,
        queue_model=queue_model,
        batch_policy=batch_policy,
        heterogeneous=heterogeneous,
        unlimited=unlimited,
        saturation_policy=saturation_policy,
        delayed_best_effort=delayed_best_effort,
        time_limit_s=time_limit,
        rel_gap=gap,
    )
    try:
        loaded = load_system(system)
        result = optimize(loaded.spec, options)
    except InfernoError as exc:
        fail(exc)
    fmt = "json" if as_json else output_format
    if fmt == "json":
        print_json(result.to_dict())
    elif fmt == "inferno":
        print_json(to_solution(result, loaded.spec).model_dump(mode="json"))
    elif fmt == "table":
        _print_plan(result, loaded)
    else:
        err.print(f"error: unknown format {fmt!r}; choose one of: table, json, inferno", markup=False)
        raise typer.Exit(1)


def _print_plan(result: Plan, loaded: LoadedSystem) -> None:
    targets = {(c.name, t.model): t for c in loaded.spec.service_class_data.service_classes for t in c.model_targets}
    servers = {s.name: s for s in loaded.spec.server_data.servers}
    table = Table(title=f"plan: {result.solver} ({result.status}, {result.solve_ms:.0f} ms)")
    for col in (
        "server",
        "accelerator(s)",
        "replicas",
        "max batch",
        "cost",
        "TTFT ms (target)",
        "ITL ms (target)",
        "unmet rps",
    ):
        table.add_column(col, justify="left" if col in ("server", "accelerator(s)") else "right")
    for name, alloc in result.allocations.items():
        srv = servers[name]
        target = targets.get((srv.class_name, srv.model))
        used = [v for v in alloc.variants if v.replicas]
        ttft = max((v.ttft_ms for v in used), default=0.0)
        itl = max((v.itl_ms for v in used), default=0.0)
        table.add_row(
            name,
            " + ".join(f"{v.replicas}x{v.accelerator}" for v in used) or "-",
            str(alloc.replicas),
            "/".join(str(v.max_batch) for v in used) or "-",
            f"{alloc.cost:.2f}",
            f"{ttft:.1f} ({target.slo_ttft:g})" if target else f"{ttft:.1f}",
            f"{itl:.2f} ({target.slo_itl:g})" if target else f"{itl:.2f}",
            f"{alloc.unmet_rps:.3f}" + (f"  {alloc.reason}" if alloc.reason else ""),
        )
    out.print(table)
    used_cards = result.cards_used()
    cards = Table(title="cards per type")
    for col in ("type", "used", "available"):
        cards.add_column(col)
    for acc_type in sorted(set(result.capacity) | set(used_cards)):
        cards.add_row(acc_type, str(used_cards.get(acc_type, 0)), str(result.capacity.get(acc_type, "-")))
    out.print(cards)
    out.print(f"total cost: {result.total_cost:.2f} cents/hour", highlight=False)
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)


KubeconfigOption = Annotated[
    Path | None, typer.Option(help="Kubeconfig file (INFERNO_KUBECONFIG); default: in-cluster, else ~/.kube/config.")
]
ContextOption = Annotated[str | None, typer.Option(help="Kubeconfig context (INFERNO_CONTEXT).")]
NamespaceOption = Annotated[
    list[str] | None,
    typer.Option("--namespace", "-n", help="Managed namespace; repeat for more (INFERNO_NAMESPACES). Default: all."),
]


@app.command()
def collect(
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
    prometheus_url: Annotated[str | None, typer.Option(help="Prometheus base URL (INFERNO_PROMETHEUS_URL).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the snapshot as JSON.")] = False,
) -> None:
    """Collect the managed servers (Deployments and metrics) once and print what was seen."""
    try:
        settings = load_settings(
            kubeconfig=kubeconfig, context=context, namespaces=namespace or None, prometheus_url=prometheus_url
        )
        snapshot = Collector(connect_kube(settings), connect_prometheus(settings), settings).collect()
    except InfernoError as exc:
        fail(exc)
    if as_json:
        print_json(snapshot.to_dict())
    else:
        _print_snapshot(snapshot)


def _print_snapshot(snapshot: Snapshot) -> None:
    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    table = Table(title=f"servers over the last {snapshot.window}")
    left = ("server", "deployment", "accelerator")
    for col in (*left, "replicas (ready)", "max-num-seqs", "req/s", "in/out tokens", "TTFT ms", "ITL ms"):
        table.add_column(col, justify="left" if col in left else "right")
    for server in snapshot.servers:
        for v in server.variants:
            m = v.metrics
            table.add_row(
                server.name,
                f"{v.namespace}/{v.deployment}",
                v.accelerator or "-",
                f"{v.replicas} ({v.ready_replicas})",
                str(v.max_num_seqs or "default"),
                num(m.arrival_rps, ".3g"),
                f"{num(m.in_tokens, '.0f')}/{num(m.out_tokens, '.0f')}",
                num(m.ttft_ms, ".1f"),
                num(m.itl_ms, ".2f"),
            )
    out.print(table)
    for server in snapshot.servers:
        for problem in server.problems:
            err.print(f"problem: {server.name}: {problem}", markup=False, highlight=False)
        for note in server.notes:
            err.print(f"note: {server.name}: {note}", markup=False, highlight=False)


@app.command()
def actuate(
    plan_file: Annotated[
        Path, typer.Argument(metavar="PLAN.json", help='Actions: a JSON list, {"actions": [...]}, or JSON lines.')
    ],
    dry_run: Annotated[
        bool | None, typer.Option("--dry-run/--apply", help="Print the actions, change nothing (INFERNO_DRY_RUN).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Dry run: print JSON lines instead of a table.")] = False,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Apply a list of actions to the Deployments (or, with --dry-run, print them and send nothing)."""
    try:
        settings = load_settings(kubeconfig=kubeconfig, context=context, namespaces=namespace or None, dry_run=dry_run)
        try:
            text = plan_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([Problem(str(plan_file), "", f"cannot read: {exc.strerror or exc}")]) from exc
        actions = read_actions(text, str(plan_file), settings.namespaces)
        if settings.dry_run:
            DryRunActuator(sys.stdout, as_json=as_json).apply(actions)
            return
        actuation = KubeActuator(connect_kube(settings), vllm_container=settings.vllm_container).apply(actions)
    except InfernoError as exc:
        fail(exc)
    _print_actuation(actuation)


def _print_actuation(actuation: Actuation) -> None:
    for r in actuation.results:
        out.print(r.describe(), highlight=False)
    if not actuation.complete:
        err.print("error: not every action was applied; collect again and re-plan", markup=False)
        raise typer.Exit(1)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="Settings file (YAML; keys are setting names).")] = None,
    system: Annotated[Path | None, typer.Option(help="System file or directory (INFERNO_SYSTEM).")] = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    namespace: NamespaceOption = None,
    prometheus_url: Annotated[str | None, typer.Option(help="Prometheus base URL (INFERNO_PROMETHEUS_URL).")] = None,
    dry_run: Annotated[
        bool | None, typer.Option("--dry-run/--apply", help="Print the planned actions, change nothing.")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit (1 when it failed).")] = False,
    period: Annotated[float | None, typer.Option(help="Seconds between cycles (INFERNO_PERIOD).")] = None,
    solver: Annotated[str | None, typer.Option(help="milp, greedy or unlimited (INFERNO_SOLVER).")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Port of /metrics and probes; 0 = off.")] = None,
    decision_log: Annotated[Path | None, typer.Option(help="Append one JSON line per cycle here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Dry run: print actions as JSON lines.")] = False,
    leader_elect: Annotated[
        bool | None, typer.Option("--leader-elect/--no-leader-elect", help="Act only while holding the Lease.")
    ] = None,
) -> None:
    """Run the control loop: in-cluster, with a kubeconfig, or as a dry run that only prints the plan."""
    try:
        settings = load_settings(
            config,
            system=system,
            kubeconfig=kubeconfig,
            context=context,
            namespaces=namespace or None,
            prometheus_url=prometheus_url,
            dry_run=dry_run,
            period=period,
            solver=solver,
            metrics_port=metrics_port,
            decision_log=decision_log,
            leader_elect=leader_elect,
        )
        if settings.system is None:
            raise ConfigError([Problem("settings", "INFERNO_SYSTEM", "no system: give --system or INFERNO_SYSTEM")])
        spec = load_system(settings.system).spec
        kube = connect_kube(settings)
        actuator: Actuator = (
            DryRunActuator(sys.stdout, as_json=as_json)
            if settings.dry_run
            else KubeActuator(kube, vllm_container=settings.vllm_container)
        )
        options = OptimizerOptions(
            solver=settings.solver,
            queue_model=settings.queue_model,
            batch_policy=settings.batch_policy,
            heterogeneous=settings.heterogeneous,
            time_limit_s=settings.milp_time_limit,
            rel_gap=settings.milp_gap,
        )
        make_solver(options, spec)  # unknown plug-in names fail now, not in the first cycle
        telemetry = Telemetry()
        elector = (
            LeaderElector(
                kube,
                settings.leader_namespace,
                settings.leader_lease,
                f"{socket.gethostname()}-{os.getpid()}",
                lease_duration_s=max(15.0, 3 * settings.period),
            )
            if settings.leader_elect
            else None
        )
        store = _tuner_store(settings, kube)
        with contextlib.ExitStack() as stack:
            log_file = (
                stack.enter_context(settings.decision_log.open("a", encoding="utf-8"))
                if settings.decision_log
                else None
            )
            controller = Controller(
                system=spec,
                collector=Collector(kube, connect_prometheus(settings), settings),
                actuator=actuator,
                options=options,
                limits=settings.limits,
                telemetry=telemetry,
                gpu_products=settings.gpu_products,
                decision_log=log_file,
                leader=elector.try_lead if elector else None,
                tuner=_tuner(settings, spec, store),
                tuner_store=store,
            )
            if settings.metrics_port and not once:
                health = HealthServer(telemetry, ready=lambda: controller.last is not None, port=settings.metrics_port)
                health.start()
                stack.callback(health.stop)
            record = serve(controller, settings.period, once=once)
    except InfernoError as exc:
        fail(exc)
    if once and record is not None:
        _print_cycle(record)
        if record.outcome in ("failed", "skipped"):
            raise typer.Exit(1)


def _tuner_store(settings: Settings, kube: Kube) -> TunerStore | None:
    """Where the tuner state persists: the ConfigMap of ``tuner_configmap``, else the file of ``tuner_state``."""
    if settings.tuner_configmap:
        namespace, name = settings.tuner_configmap.split("/", 1)
        return ConfigMapStore(kube, namespace, name)
    return JsonFileStore(settings.tuner_state) if settings.tuner_state else None


def _tuner(settings: Settings, spec: SystemSpec, store: TunerStore | None) -> EKFTuner | None:
    """The online tuner of ``settings``, seeded from the system and resumed from ``store``."""
    if not settings.tune:
        return None
    state = store.load() if store else None
    return EKFTuner(settings.queue_model, seeds=seeds_from_spec(spec, settings.queue_model), state=state)


def _print_cycle(record: CycleRecord) -> None:
    err.print(
        f"cycle {record.cycle_id}: {record.outcome}" + (f": {record.reason}" if record.reason else ""), markup=False
    )
    for a in record.adjustments:
        err.print(f"limit {a.rule}: {a.namespace}/{a.deployment}: {a.detail}", markup=False, highlight=False)
    for name, problems in record.flagged.items():
        err.print(f"held: {name}: {'; '.join(problems)}", markup=False, highlight=False)


@app.command()
def analyze(
    in_tokens: Annotated[float, typer.Option(help="Mean input tokens per request (L).")],
    out_tokens: Annotated[float, typer.Option(help="Mean output tokens per request (K, >= 1).")],
    max_batch: Annotated[
        int, typer.Option(help="Max batch N (vLLM --max-num-seqs); the ceiling with --optimize-batch.")
    ],
    queue_model: Annotated[str, typer.Option(help=f"One of: {', '.join(QUEUE_MODELS)}.")] = DEFAULT_QUEUE_MODEL,
    param: Annotated[
        list[str] | None, typer.Option(help="A queue-model parameter NAME=VALUE; repeat for each.")
    ] = None,
    max_queue: Annotated[int, typer.Option(help="Max waiting queue Q (0: 10 N).")] = 0,
    rate: Annotated[float | None, typer.Option(help="Offered rate (req/s) to analyse the replica at.")] = None,
    target_ttft: Annotated[float, typer.Option(help="Mean TTFT target (ms): size the max rate.")] = 0.0,
    target_itl: Annotated[float, typer.Option(help="Mean ITL target (ms): size the max rate.")] = 0.0,
    target_tps: Annotated[float, typer.Option(help="Tokens/s target: size the max rate.")] = 0.0,
    optimize_batch: Annotated[
        bool, typer.Option("--optimize-batch", help="With targets: choose N by the optimal-concurrency search.")
    ] = False,
    max_batched_tokens: Annotated[int, typer.Option(help="Max tokens per iteration (vLLM).")] = 8192,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Analyse one replica with a queue model: its metrics at --rate, or the max rate meeting the targets."""
    sizing = target_ttft > 0 or target_itl > 0 or target_tps > 0
    try:
        if (rate is None) != sizing:
            raise ConfigError("give either --rate or at least one of --target-ttft, --target-itl, --target-tps")
        if optimize_batch and not sizing:
            raise ConfigError("--optimize-batch needs a target (--target-ttft, --target-itl or --target-tps)")
        model = make_queue_model(queue_model, _queue_params(param or []), max_batched_tokens=max_batched_tokens)
        workload = Workload(in_tokens, out_tokens)
        targets = Targets(target_ttft, target_itl, target_tps)
        n, q = max_batch, max_queue if max_queue > 0 else 10 * max_batch
        if optimize_batch:
            n, q = choose_batch(
                model, workload, targets, "optimal", max_batch_size=max_batch, at_tokens=1, max_queue=max_queue
            )
        result: dict[str, object] = {"queue_model": model.name, "params": model.params, "max_batch": n, "max_queue": q}
        if rate is not None:
            result |= model.analyze(rate, workload, n, q).to_dict()
        else:
            sized = size(model, workload, targets, n, q)
            blank = dict.fromkeys(("throughput_rps", "ttft_ms", "itl_ms", "wait_ms", "response_ms", "in_service"))
            result |= sized.metrics.to_dict() if sized.metrics else blank
            result |= {
                "rate_rps": sized.rate_rps,
                "max_rate_rps": model.max_rate_rps(workload, n, q),
                "feasible": sized.feasible,
                "binding": sized.binding,
                "reason": sized.reason,
            }
    except InfernoError as exc:
        fail(exc)
    if as_json:
        print_json(result)
        return
    table = Table(title=f"queue model {model.name}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:g}" for k, v in value.items())
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    out.print(table)


@app.command()
def tune(
    observations: Annotated[
        Path, typer.Argument(metavar="OBSERVATIONS.jsonl", help="One observation per line (docs/tuner.md).")
    ],
    queue_model: Annotated[str, typer.Option(help=f"One of: {', '.join(QUEUE_MODELS)}.")] = DEFAULT_QUEUE_MODEL,
    init: Annotated[
        str | None, typer.Option(help="Configured parameters of every pair, e.g. alpha=12,beta=0.05,gamma=0.0005.")
    ] = None,
    max_batched_tokens: Annotated[int, typer.Option(help="Max tokens per iteration (vLLM).")] = 8192,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Replay recorded observations through the online tuner: parameter trajectory and final estimates."""
    try:
        try:
            text = observations.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([Problem(str(observations), "", f"cannot read: {exc.strerror or exc}")]) from exc
        params = None
        if init is not None:
            try:
                params = _queue_params(init.split(","))
            except ConfigError:
                raise ConfigError(f"--init {init!r}: expected NAME=VALUE,NAME=VALUE,... with numbers") from None
        result = replay(
            read_observations(text, str(observations)), queue_model, params, max_batched_tokens=max_batched_tokens
        )
    except InfernoError as exc:
        fail(exc)
    if as_json:
        print_json(result)
        return
    trajectory = Table(title=f"tuner trajectory ({result['queue_model']})")
    for col in ("cycle", "model/accelerator", "phase", "parameters", "accepted", "rejected", "skipped", "max NIS"):
        trajectory.add_column(col, justify="left" if col in ("model/accelerator", "phase", "parameters") else "right")
    for row in result["trajectory"]:
        trajectory.add_row(
            str(row["cycle"]),
            row["key"],
            row["phase"],
            _params_text(row["params"]),
            str(row["accepted"]),
            str(row["rejected"]),
            str(row["skipped"]),
            f"{max(row['nis']):.3g}" if row["nis"] else "-",
        )
    out.print(trajectory)
    final = Table(title="final estimates")
    for col in ("model/accelerator", "parameters", "tuned", "identifiable", "updates", "rejected", "skipped"):
        final.add_column(col)
    for key, est in result["estimates"].items():
        final.add_row(
            key,
            _params_text(est["params"]),
            str(est["tuned"]),
            str(est["identifiable"]),
            str(est["updates"]),
            str(est["rejected"]),
            str(est["skipped"]),
        )
    out.print(final)


def _params_text(params: dict[str, float] | None) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in params.items()) if params else "-"


def _queue_params(items: list[str]) -> dict[str, float]:
    """NAME=VALUE options as a mapping; ConfigError on a malformed one."""
    params = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE with a number") from None
    return params


def main() -> None:
    """Console-script entry point."""
    app()
