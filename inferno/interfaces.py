"""The Protocols that stages and plug-ins implement.

A plug-in is a Protocol here, an entry in a dict next to its implementations, and a name in the
settings; an unknown name is a ConfigError listing the valid names.
"""

from __future__ import annotations

from typing import Protocol

from inferno.state import OptimizationProblem, Plan, Snapshot


class Solver(Protocol):
    """Turns an optimization problem into a plan."""

    name: str

    def solve(self, problem: OptimizationProblem) -> Plan:
        """Allocate accelerators and replicas to every server of ``problem``."""
        ...


class SnapshotSource(Protocol):
    """Where a cycle's view of the cluster comes from (the collector, or a replayed snapshot)."""

    def collect(self) -> Snapshot:
        """One snapshot of every managed server; CollectError when it cannot be had."""
        ...
