"""The daemon's own metrics after a cycle: the values the alerts and the dashboard read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from inferno.config import LimitSettings
from inferno.controller import Controller
from inferno.optimizer import OptimizerOptions
from inferno.spec import AcceleratorCount, CapacityData, ServerData
from inferno.state import Action, ActionResult, Actuation, Load, Metrics, ObservedServer, Snapshot, Variant
from inferno.system import load_system
from inferno.telemetry import Telemetry
from inferno.tuner import Observation, TuneReport
from inferno.tuner.tuner import Counters, KeyReport, Outcome
from tests.conftest import SAMPLES

SAMPLE = load_system(SAMPLES / "small.yaml").spec
PREMIUM = next(s for s in SAMPLE.server_data.servers if s.name == "chat-premium")
SPEC = SAMPLE.model_copy(
    update={
        "server_data": ServerData(servers=(PREMIUM,)),
        "capacity_data": CapacityData(count=(AcceleratorCount(type="H100", count=2),)),
    }
)
"""chat-premium alone, with two H100 cards: far too few for 6,000 requests a minute."""


class OneSnapshot:
    """A collector that always sees chat-premium on one H100 replica, overloaded and slow."""

    def collect(self) -> Snapshot:
        """The same snapshot every time."""
        metrics = Metrics(arrival_rps=100.0, in_tokens=512, out_tokens=256, ttft_ms=900.0, itl_ms=40.0)
        variant = Variant(
            "llm", "chat-premium-h100", "chat-premium", "H100", 1, 1, 1, 1, 64, "vllm", "7", 1, metrics=metrics
        )
        server = ObservedServer(
            "chat-premium", "llama-3.1-8b", "Premium", (variant,), metrics, Load(6000.0, 512, 256, "prometheus")
        )
        return Snapshot(taken_at=0.0, window="1m", servers=(server,))


class RefusingActuator:
    """An API server that refuses every patch."""

    def apply(self, actions: Sequence[Action]) -> Actuation:
        """Every action failed."""
        return Actuation(tuple(ActionResult(a, "failed", "HTTP 403: forbidden") for a in actions))


class DisagreeingTuner:
    """A tuner whose every update is rolled back (the NIS gate)."""

    def update(self, observations: Iterable[Observation]) -> TuneReport:
        """Reject two updates of (llama-3.1-8b, H100), accept one."""
        outcomes = (Outcome("a", "rejected", 9.0), Outcome("b", "rejected", 8.0), Outcome("c", "accepted", 1.0))
        key = KeyReport("llama-3.1-8b", "H100", "tracking", None, None, False, None, None, outcomes, Counters())
        return TuneReport((key,))

    def estimates(self) -> dict[tuple[str, str], dict[str, float]]:
        """Nothing learnt."""
        return {}

    def state(self) -> dict[str, Any]:
        """Nothing to keep."""
        return {}


def _controller(leader: bool = True) -> Controller:
    return Controller(
        system=SPEC,
        collector=OneSnapshot(),
        actuator=RefusingActuator(),
        options=OptimizerOptions(solver="greedy", batch_policy="reference"),
        limits=LimitSettings(),
        telemetry=Telemetry(),
        leader=lambda: leader,
        tuner=DisagreeingTuner(),
    )


def _value(telemetry: Telemetry, name: str, **labels: str) -> float | None:
    return telemetry.registry.get_sample_value(name, labels)


def test_a_cycle_exports_what_the_alerts_read() -> None:
    """SLO targets, unmet demand, failed actions, tuner results and leadership are set after one cycle."""
    controller = _controller()
    record = controller.cycle()
    assert record.outcome == "ok", record.reason
    assert record.plan is not None
    t = controller.telemetry
    assert _value(t, "inferno_slo_target_ms", server="chat-premium", metric="ttft") == 500
    assert _value(t, "inferno_slo_target_ms", server="chat-premium", metric="itl") == 25
    unmet = record.plan.allocations["chat-premium"].unmet_rps
    assert unmet > 0
    assert _value(t, "inferno_unmet_demand_rps", server="chat-premium") == unmet
    assert _value(t, "inferno_cards", type="H100", kind="available") == 2
    assert _value(t, "inferno_observed_latency_ms", server="chat-premium", metric="ttft") == 900
    assert len(record.results) == 1 and record.results[0].outcome == "failed"
    kind = "max_num_seqs" if record.results[0].action.changes_max_num_seqs else "replicas"
    assert _value(t, "inferno_actions_total", kind=kind, result="failed") == 1
    rejected = {"model": "llama-3.1-8b", "accelerator": "H100", "result": "rejected"}
    assert _value(t, "inferno_tuner_updates_total", **rejected) == 2
    assert _value(t, "inferno_tuner_updates_total", **{**rejected, "result": "accepted"}) == 1
    assert _value(t, "inferno_leader") == 1
    assert _value(t, "inferno_cycles_total", outcome="ok") == 1


def test_a_standby_replica_says_so_and_exports_no_plan() -> None:
    """A replica without the Lease sets inferno_leader to 0 and touches no plan metric."""
    controller = _controller(leader=False)
    record = controller.cycle()
    assert record.outcome == "standby"
    t = controller.telemetry
    assert _value(t, "inferno_leader") == 0
    assert _value(t, "inferno_unmet_demand_rps", server="chat-premium") is None
    assert _value(t, "inferno_tuner_updates_total", model="llama-3.1-8b", accelerator="H100", result="rejected") is None
    assert _value(t, "inferno_cycles_total", outcome="standby") == 1
