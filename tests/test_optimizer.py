"""Tests of the optimizer end to end: systems in, plans out (queue models, candidates, solvers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inferno.cli import app
from inferno.errors import ConfigError, SolveError
from inferno.optimizer import OptimizerOptions, optimize
from inferno.optimizer import milp as milp_module
from inferno.optimizer.candidates import build_problem
from inferno.spec import AllocationSolution, SystemSpec
from inferno.state import Plan
from inferno.system import load_system
from tests.conftest import SAMPLES

runner = CliRunner()
REFERENCE_MODEL = {"2025": "inferno-2025", "2026": "iteration"}
SETS = ["2025/small", "2025/large", "2026/small", "2026/large"]


def _options(name: str, solver: str, **kw: object) -> OptimizerOptions:
    return OptimizerOptions(solver=solver, queue_model=REFERENCE_MODEL[name[:4]], batch_policy="reference", **kw)  # type: ignore[arg-type]


def _targets(spec: SystemSpec) -> dict[str, tuple[float, float]]:
    classes = {c.name: c for c in spec.service_class_data.service_classes}
    out = {}
    for srv in spec.server_data.servers:
        target = next(t for t in classes[srv.class_name].model_targets if t.model == srv.model)
        out[srv.name] = (target.slo_ttft, target.slo_itl)
    return out


def _assert_slos_met(plan: Plan, spec: SystemSpec) -> None:
    for name, (ttft, itl) in _targets(spec).items():
        for v in plan.allocations[name].variants:
            if v.replicas:
                assert ttft == 0 or v.ttft_ms <= ttft * (1 + 1e-6), (name, v)
                assert itl == 0 or v.itl_ms <= itl * (1 + 1e-6), (name, v)


def _assert_within_capacity(plan: Plan) -> None:
    for acc_type, cards in plan.cards_used().items():
        assert cards <= plan.capacity.get(acc_type, 0), acc_type


def test_milp_never_costs_more_than_greedy_on_reference_sets(reference: Path) -> None:
    """On every reference set where greedy serves all demand, milp costs <= greedy, and less on one."""
    strictly_lower = []
    for name in SETS:
        spec = load_system(reference / name).spec
        greedy = optimize(spec, _options(name, "greedy"))
        milp = optimize(spec, _options(name, "milp"))
        for plan in (greedy, milp):
            _assert_within_capacity(plan)
            _assert_slos_met(plan, spec)
        if all(a.unmet_rps == 0 for a in greedy.allocations.values()):
            assert milp.total_cost <= greedy.total_cost + 1e-6, name
            assert all(a.unmet_rps == 0 for a in milp.allocations.values()), name
            strictly_lower.append(milp.total_cost < greedy.total_cost - 1e-6)
    assert strictly_lower and any(strictly_lower)


@pytest.mark.parametrize("name", SETS)
def test_unlimited_equals_milp_without_capacity(reference: Path, name: str) -> None:
    """The unlimited solver's cost equals the MILP's once capacity is removed."""
    spec = load_system(reference / name).spec
    unlimited = optimize(spec, _options(name, "unlimited"))
    milp = optimize(spec, _options(name, "milp", unlimited=True))
    assert unlimited.total_cost == pytest.approx(milp.total_cost, rel=1e-9)


def test_greedy_reference_plan_is_complete_and_deterministic(reference: Path) -> None:
    """Greedy with the 2025 model gives every reference server a plan, identically on every run."""
    spec = load_system(reference / "2025/large").spec
    first = optimize(spec, _options("2025", "greedy")).to_dict()
    second = optimize(spec, _options("2025", "greedy")).to_dict()
    assert first["allocations"] == second["allocations"]
    served = [a for a in first["allocations"].values() if a["replicas"] > 0]  # type: ignore[union-attr]
    assert len(served) == len(spec.server_data.servers)


@pytest.mark.parametrize("name", ["small.yaml", "large.yaml"])
@pytest.mark.parametrize("hetero", [False, True])
def test_samples_plan_within_capacity_and_slos(name: str, hetero: bool) -> None:
    """Our samples plan within capacity and every served server meets its targets."""
    spec = load_system(SAMPLES / name).spec
    plan = optimize(spec, OptimizerOptions(heterogeneous=hetero))
    _assert_within_capacity(plan)
    _assert_slos_met(plan, spec)
    assert plan.status == "optimal"
    assert plan.total_cost > 0


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "system.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unservable_server_is_explained(tmp_path: Path) -> None:
    """A server whose ITL target no accelerator can meet is reported with the reason, others are planned."""
    data = yaml.safe_load((SAMPLES / "small.yaml").read_text())
    for cls in data["serviceClasses"]:
        if cls["name"] == "Premium":
            cls["modelTargets"][0]["slo-itl"] = 0.01
    result = runner.invoke(app, ["plan", str(_write(tmp_path, data)), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    bad = plan["allocations"]["chat-premium"]
    assert bad["replicas"] == 0
    assert bad["unmet_rps"] == pytest.approx(10.0)
    assert "no feasible accelerator" in bad["reason"]
    assert plan["allocations"]["chat-free"]["replicas"] > 0


@pytest.mark.parametrize("cards", [2, 3, 4])
def test_capacity_short_goes_to_premium_first(tmp_path: Path, cards: int) -> None:
    """When cards are short no Free server holds cards that a short Premium server could use."""
    data = yaml.safe_load((SAMPLES / "small.yaml").read_text())
    data["capacity"] = [{"type": t, "count": cards} for t in ("H100", "A100", "L4")]
    spec = load_system(_write(tmp_path, data)).spec
    plan = optimize(spec, OptimizerOptions())
    _assert_within_capacity(plan)
    problem, _ = build_problem(spec, queue_model="iteration", batch_policy="optimal")
    free = {t: n - plan.cards_used().get(t, 0) for t, n in plan.capacity.items()}
    demands = {s.name: s for s in problem.servers}
    for short in (demands[n] for n, a in plan.allocations.items() if a.unmet_rps > 0):
        for other in problem.servers:
            if other.priority <= short.priority:
                continue
            for v in plan.allocations[other.name].variants:
                usable = [c for c in short.candidates if c.acc_type == v.acc_type]
                assert not any(c.cards_per_replica <= free[v.acc_type] + v.cards for c in usable), (
                    short.name,
                    other.name,
                )
    if cards == 2:  # too few cards for everyone: the plan says who is short and why
        assert any(a.unmet_rps > 0 and "capacity" in a.reason for a in plan.allocations.values())


def test_solver_crash_falls_back_to_greedy(monkeypatch: pytest.MonkeyPatch) -> None:
    """When HiGHS fails, the plan comes from greedy and says so."""

    def broken(self: milp_module.MilpSolver, problem: object) -> Plan:
        raise SolveError("HiGHS failed: simulated crash")

    monkeypatch.setattr(milp_module.MilpSolver, "solve", broken)
    plan = optimize(load_system(SAMPLES / "small.yaml").spec, OptimizerOptions())
    assert plan.status == "fallback"
    assert plan.solver == "greedy"
    assert "simulated crash" in plan.warnings[0]


def test_unknown_solver_lists_choices() -> None:
    """An unknown solver name is a ConfigError naming the valid ones."""
    with pytest.raises(ConfigError, match="milp, greedy, unlimited"):
        optimize(load_system(SAMPLES / "small.yaml").spec, OptimizerOptions(solver="cplex"))


def test_plan_cli_json_and_inferno_formats() -> None:
    """`inferno plan --json` has the documented keys; --format inferno is a valid AllocationSolution."""
    result = runner.invoke(app, ["plan", str(SAMPLES / "small.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert {"allocations", "total_cost", "solver", "status", "solve_ms"} <= plan.keys()
    first = next(iter(plan["allocations"].values()))
    assert {
        "accelerator",
        "replicas",
        "max_batch",
        "cost",
        "ttft_ms",
        "itl_ms",
        "unmet_rps",
        "variants",
    } <= first.keys()
    result = runner.invoke(app, ["plan", str(SAMPLES / "small.yaml"), "--format", "inferno"])
    assert result.exit_code == 0, result.output
    solution = AllocationSolution.model_validate_json(result.stdout)
    assert solution.allocations["chat-premium"].num_replicas == plan["allocations"]["chat-premium"]["replicas"]


def test_plan_cli_table_and_bad_input(tmp_path: Path) -> None:
    """The table names servers and totals; a bad system exits 1 without a traceback."""
    result = runner.invoke(app, ["plan", str(SAMPLES / "small.yaml"), "--solver", "greedy"])
    assert result.exit_code == 0, result.output
    assert "chat-premium" in result.output and "total cost" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("accelerators: 3\n")
    result = runner.invoke(app, ["plan", str(bad)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
