"""Lease-based leader election through the official client against the kmock emulator."""

from __future__ import annotations

from inferno.config import LimitSettings
from inferno.controller import Controller
from inferno.k8s import LeaderElector
from inferno.optimizer import OptimizerOptions
from inferno.state import Actuation, Snapshot
from inferno.system import load_system
from inferno.telemetry import Telemetry
from tests.conftest import SAMPLES
from tests.support.kube import LEASES, Emulator


class Clock:
    """A settable clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        """The current time."""
        return self.now


def test_one_leader_at_a_time_and_takeover_after_expiry(emulator: Emulator) -> None:
    """Emulator: kmock. The first replica leads and renews; the second waits until the Lease expires."""
    clock = Clock(1_000_000.0)
    a = LeaderElector(emulator.kube(), "inferno-system", "inferno-leader", "pod-a", 30, clock)
    b = LeaderElector(emulator.kube(), "inferno-system", "inferno-leader", "pod-b", 30, clock)
    assert a.try_lead() is True
    assert b.try_lead() is False
    clock.now += 20
    assert a.try_lead() is True  # renewal
    clock.now += 20
    assert b.try_lead() is False  # renewed 20 s ago, still valid
    clock.now += 31
    assert b.try_lead() is True  # a stopped renewing: b takes over
    assert a.try_lead() is False
    lease = emulator.get("inferno-system", "inferno-leader", resource=LEASES)
    assert lease["spec"]["holderIdentity"] == "pod-b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert lease["spec"]["leaseDurationSeconds"] == 30


def test_api_error_means_not_leader(emulator: Emulator) -> None:
    """Emulator: kmock. When the Lease cannot be read the replica does not act."""
    emulator.fail("GET", "/apis/coordination.k8s.io/v1/namespaces/inferno-system/leases/inferno-leader", 500, "down")
    assert LeaderElector(emulator.kube(), "inferno-system", "inferno-leader", "pod-a", 30).try_lead() is False


class Refuse:
    """A snapshot source and actuator that fail the test when used."""

    def collect(self) -> Snapshot:
        """Fail: standby replicas must not collect."""
        raise AssertionError("a standby replica must not collect")

    def apply(self, actions: object) -> Actuation:
        """Fail: standby replicas must not actuate."""
        raise AssertionError("a standby replica must not actuate")


def test_standby_replica_does_nothing() -> None:
    """A controller that does not hold the Lease neither collects nor actuates."""
    controller = Controller(
        system=load_system(SAMPLES / "small.yaml").spec,
        collector=Refuse(),
        actuator=Refuse(),
        options=OptimizerOptions(),
        limits=LimitSettings(),
        telemetry=Telemetry(),
        leader=lambda: False,
    )
    record = controller.cycle()
    assert (record.outcome, record.reason) == ("standby", "another replica holds the leader Lease")
