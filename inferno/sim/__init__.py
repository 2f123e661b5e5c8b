"""Simulation of vLLM replicas: the reference the queue models are measured against.

``Replica`` is a steppable discrete-event model of one replica (continuous batching with chunked
prefill, iteration by iteration); ``simulate`` runs an open-loop experiment through one and
summarises it. Times are in ms, rates in req/s.
"""

from inferno.sim.replica import EngineConfig, Replica, RequestRecord
from inferno.sim.simulation import LENGTH_KINDS, Lengths, SimResult, Stats, simulate

__all__ = [
    "LENGTH_KINDS",
    "EngineConfig",
    "Lengths",
    "Replica",
    "RequestRecord",
    "SimResult",
    "Stats",
    "simulate",
]
