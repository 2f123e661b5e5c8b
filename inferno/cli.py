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
from inferno.calibration import Plan as CalibrationPlan
from inferno.calibration import PrometheusReader, ScrapeReader, instance_of
from inferno.calibration import calibrate as run_calibration
from inferno.collector import Collector
from inferno.config import Settings, load_settings, reference_docs
from inferno.controller import Controller, CycleRecord, serve
from inferno.crd import crd_yaml
from inferno.errors import ConfigError, InfernoError, Problem
from inferno.k8s import ConfigMapStore, Kube, LeaderElector
from inferno.k8s import connect as connect_kube
from inferno.logs import configure
from inferno.optimizer import SOLVERS, OptimizerOptions, make_solver, optimize, to_solution
from inferno.predictor import Forecaster, History, make_predictor
from inferno.prometheus import connect as connect_prometheus
from inferno.queueing import DEFAULT_QUEUE_MODEL, QUEUE_MODELS, Targets, Workload, choose_batch, make_queue_model, size
from inferno.reconcile import Reconciler, Reconciliation
from inferno.reconcile import serve as serve_reconciler
from inferno.sim.closedloop import POLICIES, load_scenario, plot_result, simulate_scenario
from inferno.sim.demo import DemoOptions, DemoSummary, run_demo
from inferno.sim.emulator import EmulatorConfig, serve_forever
from inferno.sim.replica import EngineConfig
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
    reference: Annotated[
        Path | None, typer.Option(help="Write the Markdown reference of settings and system into this directory.")
    ] = None,
    crd: Annotated[
        bool, typer.Option("--crd", help="Print the CustomResourceDefinition of Optimizer (YAML) instead.")
    ] = False,
) -> None:
    """Print the JSON Schema of an input format (or write all of them, the Markdown reference, or the CRD)."""
    if crd:
        sys.stdout.write(crd_yaml())
        return
    if reference is not None:
        reference.mkdir(parents=True, exist_ok=True)
        for file_name, text in reference_docs().items():
            (reference / file_name).write_text(text, encoding="utf-8")
        out.print(f"wrote the configuration reference to {reference}", markup=False, highlight=False)
        return
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
    mode: Annotated[
        str,
        typer.Option(
            help="periodic: a cycle over --system every period; reconcile: reconcile Optimizer resources, "
            "resyncing every period (docs/modes.md)."
        ),
    ] = "periodic",
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
        if mode not in RUN_MODES:
            raise ConfigError(
                [Problem("options", "--mode", f"unknown mode {mode!r}; choose one of: {', '.join(RUN_MODES)}")]
            )
        if mode == "reconcile":
            _run_reconcile(settings, once=once)
            return
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
        elector = _elector(settings, kube)
        store = _tuner_store(settings, kube)
        history_store = _tuner_store(settings, kube, HISTORY_KEY)
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
                forecaster=_forecaster(settings, history_store),
                forecaster_store=history_store,
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


RUN_MODES = ("periodic", "reconcile")

HISTORY_KEY = "load-history.json"
"""Key (ConfigMap) or file name (beside ``tuner_state``) of the load forecaster's history."""
"""Modes of ``inferno run`` (docs/modes.md)."""


def _elector(settings: Settings, kube: Kube) -> LeaderElector | None:
    """The Lease-based leader election of ``--leader-elect``; None without it."""
    if not settings.leader_elect:
        return None
    identity = f"{socket.gethostname()}-{os.getpid()}"
    duration = max(15.0, 3 * settings.period)
    return LeaderElector(kube, settings.leader_namespace, settings.leader_lease, identity, lease_duration_s=duration)


def _run_reconcile(settings: Settings, *, once: bool) -> None:
    """``inferno run --mode reconcile``: reconcile the Optimizer resources (one pass with ``once``)."""
    if settings.system is not None:
        err.print("note: --system is not used in reconcile mode: each Optimizer names its system", markup=False)
    make_solver(OptimizerOptions(solver=settings.solver), SystemSpec())  # an unknown name fails now
    kube = connect_kube(settings)
    telemetry = Telemetry()
    elector = _elector(settings, kube)
    with contextlib.ExitStack() as stack:
        log_file = (
            stack.enter_context(settings.decision_log.open("a", encoding="utf-8")) if settings.decision_log else None
        )
        reconciler = Reconciler(
            kube,
            settings,
            prometheus=connect_prometheus(settings),
            telemetry=telemetry,
            leader=elector.try_lead if elector else None,
            decision_log=log_file,
        )
        if settings.metrics_port and not once:
            health = HealthServer(telemetry, ready=lambda: reconciler.ready, port=settings.metrics_port)
            health.start()
            stack.callback(health.stop)
        results = serve_reconciler(reconciler, once=once)
    if once:
        _print_reconciliations(results)
        if any(r.outcome in ("skipped", "failed", "invalid", "crashed") for r in results):
            raise typer.Exit(1)


def _print_reconciliations(results: list[Reconciliation]) -> None:
    table = Table(title=f"Optimizers: {len(results)}")
    for col in ("optimizer", "why", "outcome", "cost", "detail"):
        table.add_column(col, justify="right" if col == "cost" else "left")
    for r in results:
        cost = (r.status or {}).get("totalCost")
        table.add_row(
            f"{r.namespace}/{r.name}",
            r.why or "-",
            r.outcome,
            "-" if cost is None else f"{cost:.2f}",
            r.detail or "-",
        )
    out.print(table)


def _tuner_store(settings: Settings, kube: Kube, key: str = ConfigMapStore.KEY) -> TunerStore | None:
    """Where state ``key`` persists: that key of ConfigMap ``tuner_configmap``, else a file beside ``tuner_state``.

    The tuner's own state (the default key) is the ``tuner_state`` file itself.
    """
    if settings.tuner_configmap:
        namespace, name = settings.tuner_configmap.split("/", 1)
        return ConfigMapStore(kube, namespace, name, key)
    if settings.tuner_state is None:
        return None
    path = settings.tuner_state if key == ConfigMapStore.KEY else settings.tuner_state.with_name(key)
    return JsonFileStore(path)


def _forecaster(settings: Settings, store: TunerStore | None) -> Forecaster | None:
    """The load forecaster of ``settings.predictor`` (None unless enabled), resumed from ``store``."""
    p = settings.predictor
    if not p.enabled:
        return None
    saved = store.load() if store else None
    history = History.from_dict(saved) if saved else History.from_settings(p, settings.period)
    return Forecaster(make_predictor(p.method, p), history, p.startup_s + settings.period)


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


@app.command()
def calibrate(
    url: Annotated[str, typer.Option(help="Base URL of the vLLM server (its OpenAI API and /metrics).")],
    max_num_seqs: Annotated[int, typer.Option(help="The server's --max-num-seqs.")],
    prometheus: Annotated[
        str | None,
        typer.Option(help="Prometheus that scrapes the server; none = difference the server's own /metrics."),
    ] = None,
    instance: Annotated[
        str | None, typer.Option(help="The server's instance label in Prometheus; default: host:port of --url.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model to request; default: the first the server lists.")] = None,
    accelerator: Annotated[str, typer.Option(help="Accelerator name the observations carry.")] = "cpu",
    mix: Annotated[
        list[str] | None,
        typer.Option(help="Token mix IN:OUT (prompt:output tokens); repeat. Default 128:16, 64:64, 16:128."),
    ] = None,
    load: Annotated[
        list[float] | None, typer.Option(help="Load, a fraction of the max throughput; repeat. Default 0.2 .. 0.8.")
    ] = None,
    step_seconds: Annotated[float, typer.Option(help="Seconds of one load step.")] = 15.0,
    max_requests: Annotated[int, typer.Option(help="Most requests of one load step.")] = 600,
    queue_model: Annotated[str, typer.Option(help=f"One of: {', '.join(QUEUE_MODELS)}.")] = DEFAULT_QUEUE_MODEL,
    max_batched_tokens: Annotated[int, typer.Option(help="The server's --max-num-batched-tokens.")] = 8192,
    seed: Annotated[int, typer.Option(help="Seed of the arrivals and prompts.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Measure a vLLM server with a short load sweep and fit the queue model's parameters to it."""
    try:
        defaults = CalibrationPlan()
        mixes = tuple(_token_mix(m) for m in mix) if mix else defaults.mixes
        plan = CalibrationPlan(
            mixes=mixes,
            loads=tuple(load) if load else defaults.loads,
            step_s=step_seconds,
            max_requests=max_requests,
            seed=seed,
        )
        settings = load_settings(prometheus_url=prometheus)
        client = connect_prometheus(settings)
        reader = (
            ScrapeReader(url, settings)
            if client is None
            else PrometheusReader(client, instance or instance_of(url), settings)
        )
        result = run_calibration(
            url,
            model,
            max_num_seqs,
            reader,
            plan,
            accelerator=accelerator,
            queue_model=queue_model,
            max_batched_tokens=max_batched_tokens,
            progress=lambda line: err.print(line, markup=False, highlight=False),
        )
    except InfernoError as exc:
        fail(exc)
    data = result.to_dict()
    if as_json:
        print_json(data)
        return
    out.print(f"{result.queue_model}: {_params_text(result.params)}", highlight=False)
    out.print(
        f"fit: rms relative error {result.rms:.3f}, condition number {result.condition:.3g}, "
        f"identifiable {result.identifiable}",
        highlight=False,
    )
    table = Table(title=f"observations of {result.model} (--max-num-seqs {result.max_num_seqs})")
    for col in ("mix", "load", "req/s", "TTFT ms", "predicted", "ITL ms", "predicted"):
        table.add_column(col, justify="right")
    for row in data["observations"]:
        obs, predicted = row["observation"], row["predicted"]
        table.add_row(
            f"{row['mix'][0]}:{row['mix'][1]}",
            f"{row['load']:.0%}",
            f"{obs['rate_rps']:.3g}",
            f"{obs['ttft_ms']:.3g}",
            f"{predicted['ttft_ms']:.3g}",
            f"{obs['itl_ms']:.3g}",
            f"{predicted['itl_ms']:.3g}",
        )
    out.print(table)
    for m in data["max_throughput"]:
        out.print(
            f"max throughput at {m['in_tokens']}:{m['out_tokens']}: measured {m['rate_rps']:.3g} req/s, "
            f"model {m['predicted_rps']:.3g} req/s",
            highlight=False,
        )
    for note in result.notes:
        err.print(f"note: {note}", markup=False, highlight=False)


def _token_mix(text: str) -> tuple[int, int]:
    """'IN:OUT' as (prompt tokens, output tokens); ConfigError when malformed."""
    left, _, right = text.partition(":")
    try:
        return int(left), int(right)
    except ValueError:
        raise ConfigError(f"--mix {text!r}: expected IN:OUT with whole numbers of tokens") from None


@app.command("emulate-vllm")
def emulate_vllm(
    model: Annotated[str, typer.Option(help="Model name it serves (the OpenAI `model` field).")],
    alpha: Annotated[float, typer.Option(help="Per-iteration overhead (ms).")],
    beta: Annotated[float, typer.Option(help="Compute time per token (ms).")],
    gamma: Annotated[float, typer.Option(help="KV-cache read time per token (ms).")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 in a container).")] = "127.0.0.1",
    max_num_seqs: Annotated[int, typer.Option(help="Max requests in the batch (vLLM --max-num-seqs).")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option(help="Max tokens per iteration (vLLM).")] = 8192,
    startup_s: Annotated[float, typer.Option(help="Seconds until /health answers 200 (model loading).")] = 0.0,
    time_scale: Annotated[float, typer.Option(help="Run this many times faster than real time.")] = 1.0,
) -> None:
    """Serve an emulated vLLM (OpenAI API, /health, /metrics) whose timing comes from the replica simulator."""
    try:
        engine = EngineConfig(alpha, beta, gamma, max_num_seqs, max_batched_tokens=max_num_batched_tokens)
        config = EmulatorConfig(model, engine, startup_s=startup_s, time_scale=time_scale)
    except InfernoError as exc:
        fail(exc)

    def started() -> None:
        err.print(f"emulated vLLM serving {model} on http://{host}:{port}", markup=False, highlight=False)

    try:
        serve_forever(config, host, port, on_start=started)
    except OSError as exc:
        fail(ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"))


@app.command()
def demo(
    duration_s: Annotated[float, typer.Option(help="Wall-clock seconds the control loop runs.")] = 180.0,
    time_scale: Annotated[float, typer.Option(help="Run the emulated world this many times faster.")] = 1.0,
    prometheus: Annotated[
        bool | None,
        typer.Option("--prometheus/--no-prometheus", help="Require a real Prometheus / use the built-in scraper."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the traffic.")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the controller's log lines too.")] = False,
) -> None:
    """Autoscale emulated vLLM servers under live load with the real control loop; no cluster or GPU needed."""
    if not verbose:
        configure("warning", load_settings().log_format)
    try:
        options = DemoOptions(duration_s=duration_s, time_scale=time_scale, use_prometheus=prometheus, seed=seed)
        summary = run_demo(options, lambda line: out.print(line, markup=False, highlight=False))
    except InfernoError as exc:
        fail(exc)
    _print_demo(summary)


def _print_demo(summary: DemoSummary) -> None:
    counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(summary.cycles.items())) or "none"
    out.print(f"\nsummary: {summary.emulated_s:.0f} emulated seconds, cycles: {counts}", highlight=False)
    out.print(f"actions applied: {len(summary.actions)}", highlight=False)
    for action in summary.actions:
        out.print(f"  {action}", markup=False, highlight=False)
    table = Table(title="servers (emulated units; latencies are the means vLLM reported per cycle)")
    for col in ("server", "class", "load r/s", "replicas min-max (final)", "TTFT ms (SLO)", "ITL ms (SLO)", "SLO met"):
        table.add_column(col, justify="left" if col in ("server", "class", "replicas min-max (final)") else "right")
    for s in summary.servers:
        replicas = ", ".join(f"{acc} {lo}-{hi} ({final})" for acc, (lo, hi, final) in s.replicas.items())
        table.add_row(
            s.name,
            s.service_class,
            f"{s.load_rps[0]:.2f}-{s.load_rps[1]:.2f}",
            replicas,
            "-" if s.mean_ttft_ms is None else f"{s.mean_ttft_ms:.0f} ({s.slo_ttft_ms:g})",
            "-" if s.mean_itl_ms is None else f"{s.mean_itl_ms:.1f} ({s.slo_itl_ms:g})",
            "-" if s.slo_met is None else f"{s.slo_met:.0%} of cycles",
        )
    out.print(table)
    out.print(
        f"accelerator spend: ${summary.spend_dollars:.2f} (${summary.mean_cost_per_hour:.2f}/hour on average); "
        f"metrics from {summary.metrics_source}",
        highlight=False,
    )


@app.command()
def simulate(
    scenario: Annotated[Path, typer.Argument(help="Closed-loop scenario (YAML), e.g. config/scenarios/smoke.yaml.")],
    policy: Annotated[str, typer.Option(help=f"One of: {', '.join(POLICIES)}.")] = "inferno",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    timeline: Annotated[bool, typer.Option("--timeline", help="Include the per-period timeline in the JSON.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write load, replicas, TTFT/SLO and cost to this PNG.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the controller's log lines too.")] = False,
) -> None:
    """Run a scaling policy in closed loop against a fast simulated cluster; report SLO attainment and cost."""
    if not verbose:
        configure("warning", load_settings().log_format)
    try:
        result = simulate_scenario(load_scenario(scenario), policy)
        if plot is not None:
            plot_result(result, plot)
    except InfernoError as exc:
        fail(exc)
    if as_json:
        print_json(result.to_dict(timeline=timeline))
        return
    data = result.to_dict()
    classes = ", ".join(f"{k} {v:.3f}" for k, v in data["slo_attainment"]["per_class"].items())
    out.print(
        f"{result.scenario} / {result.policy}: SLO attainment {result.overall:.3f} ({classes}), "
        f"cost {result.cost:.0f}, {result.actions} actions, {result.restarts} restarts, {result.wall_s:.1f} s",
        markup=False,
        highlight=False,
    )


def main() -> None:
    """Console-script entry point."""
    app()
