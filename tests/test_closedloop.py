"""Tests of the closed-loop simulator (inferno simulate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inferno.cli import app
from inferno.errors import ConfigError
from inferno.logs import configure
from inferno.sim.closedloop import (
    POLICIES,
    ClosedLoop,
    SimActuator,
    load_scenario,
    simulate_scenario,
)
from inferno.state import Action

SCENARIOS = Path(__file__).resolve().parent.parent / "config" / "scenarios"
SMOKE = SCENARIOS / "smoke.yaml"


@pytest.fixture(autouse=True)
def _quiet() -> None:
    configure("warning")


def _scenario(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(f"system: {SCENARIOS / 'hetero-system.yaml'}\n{body}")
    return path


STEADY = """
duration_s: 5400
metrics_noise: 0.02
servers:
  chat-premium:
    traffic:
      arrivals: {shape: steady, rate_rps: 9}
      in_tokens: {mean: 512}
      out_tokens: {mean: 256}
"""

SLOW = """
duration_s: 7200
metrics_noise: 0.02
servers:
  chat-standard:
    traffic:
      arrivals: {shape: diurnal, mean_rps: 10, amplitude: 0.8, period_s: 7200, peak_s: 3600}
      in_tokens: {mean: 512}
      out_tokens: {mean: 256}
"""


@pytest.mark.parametrize("policy", list(POLICIES))
def test_smoke_runs_every_policy(policy: str) -> None:
    """Every policy runs the smoke scenario and gives an attainment in [0, 1] and a positive cost."""
    result = simulate_scenario(load_scenario(SMOKE), policy)
    assert 0.0 <= result.overall <= 1.0
    assert set(result.per_class) == {"Free", "Premium"}
    assert all(0.0 <= v <= 1.0 for v in result.per_class.values())
    assert result.cost > 0
    assert result.duration_s == 3600
    assert len(result.timeline) == 60


def test_steady_load_inferno_meets_slo(tmp_path: Path) -> None:
    """A steady load with enough capacity: inferno meets the SLO for >= 99% and costs at most static-peak."""
    loaded = load_scenario(_scenario(tmp_path, STEADY))
    inferno = simulate_scenario(loaded, "inferno")
    static = simulate_scenario(loaded, "static-peak")
    assert inferno.overall >= 0.99
    assert static.overall >= 0.99
    assert inferno.cost <= static.cost * 1.02


def test_slowly_varying_load_inferno_cheaper_than_static_peak(tmp_path: Path) -> None:
    """A slow daily-like swing: inferno costs < 90% of static-peak but, sized to the current load, misses 5-15%."""
    loaded = load_scenario(_scenario(tmp_path, SLOW))
    inferno = simulate_scenario(loaded, "inferno")
    static = simulate_scenario(loaded, "static-peak")
    assert static.overall >= 0.99
    assert 0.85 <= inferno.overall < 0.95
    assert inferno.cost < 0.9 * static.cost
    assert inferno.actions > 0


def test_forecast_keeps_slo_on_a_swing(tmp_path: Path) -> None:
    """The same swing with the load forecast (inferno-forecast): >= 99% met, still < 90% of static-peak's cost."""
    loaded = load_scenario(_scenario(tmp_path, SLOW))
    forecast = simulate_scenario(loaded, "inferno-forecast")
    static = simulate_scenario(loaded, "static-peak")
    assert forecast.overall >= 0.99
    assert forecast.cost < 0.9 * static.cost


def _smoke_cluster() -> ClosedLoop:
    cluster = ClosedLoop(load_scenario(SMOKE))
    cluster.set_ready("chat-premium", "H100", 1, 64)
    return cluster


def test_replicas_are_ready_only_after_startup() -> None:
    """A scale-up holds cards (and costs) at once but serves only after startup_s (120 s)."""
    cluster = _smoke_cluster()
    v = cluster.variant("chat-premium", "H100")
    action = Action("sim", v.deployment, "chat-premium", "H100", replicas_from=1, replicas_to=3)
    outcome = SimActuator(cluster).apply([action])
    assert [r.outcome for r in outcome.results] == ["applied"]
    assert (v.replicas, v.ready, len(v.starting)) == (3, 1, 2)
    cluster.advance(110.0, 10.0)
    assert v.ready == 1
    assert cluster.cost == pytest.approx(3 * 390 * 110 / 3600)
    cluster.advance(130.0, 10.0)
    assert (v.ready, len(v.starting)) == (3, 0)
    assert cluster.actions == 1


def test_max_num_seqs_change_counts_a_restart() -> None:
    """Changing --max-num-seqs restarts the variant's replicas: one restart, no ready replica for startup_s."""
    cluster = _smoke_cluster()
    v = cluster.variant("chat-premium", "H100")
    action = Action("sim", v.deployment, "chat-premium", "H100", 1, 2, max_num_seqs_from=64, max_num_seqs_to=32)
    SimActuator(cluster).apply([action])
    assert cluster.restarts == 1
    assert (v.max_batch, v.ready, len(v.starting)) == (32, 0, 2)
    cluster.advance(120.0, 10.0)
    assert v.ready == 0
    cluster.advance(130.0, 10.0)
    assert v.ready == 2


def test_stale_action_is_skipped() -> None:
    """An action planned from another replica count is skipped, not applied."""
    cluster = _smoke_cluster()
    v = cluster.variant("chat-premium", "H100")
    outcome = SimActuator(cluster).apply([Action("sim", v.deployment, "chat-premium", "H100", 4, 5)])
    assert [r.outcome for r in outcome.results] == ["skipped"]
    assert (v.replicas, cluster.actions) == (1, 0)


def test_unknown_policy_lists_the_names() -> None:
    """An unknown policy is a ConfigError naming every policy."""
    with pytest.raises(ConfigError) as info:
        simulate_scenario(load_scenario(SMOKE), "nope")
    assert "inferno, inferno-forecast, hpa, saturation, static-peak, oracle" in str(info.value)


def test_malformed_scenario_names_field_and_file(tmp_path: Path) -> None:
    """A bad value and an unknown server are reported with the file and the field path."""
    path = _scenario(tmp_path, "duration_s: -5\nservers: {}\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    text = str(info.value)
    assert f"{path}: duration_s:" in text
    assert f"{path}: servers:" in text
    path = _scenario(
        tmp_path, "duration_s: 60\nservers:\n  nobody:\n    traffic: {arrivals: {shape: steady, rate_rps: 1}}\n"
    )
    with pytest.raises(ConfigError, match=r"scenario.yaml: servers.nobody: not a server"):
        load_scenario(path)


def test_cli_json_has_the_result_keys() -> None:
    """`inferno simulate --json` prints one object with attainment, cost, actions, restarts and times."""
    result = CliRunner().invoke(app, ["simulate", str(SMOKE), "--policy", "hpa", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"policy", "scenario", "slo_attainment", "cost", "actions", "restarts", "duration_s", "wall_s"}
    assert data["policy"] == "hpa"
    assert set(data["slo_attainment"]) == {"overall", "per_class"}
