"""Queue models of one inference-server replica, SLO sizing and max batch choice (design section 4).

A queue model turns an offered request rate, the mean token lengths and the replica's max batch N and
queue bound Q into steady-state latency and throughput. Three are provided, chosen by name:
"iteration" (the default), "inferno-2025" and "mm1k". Public units: req/s and ms.
"""

from inferno.queueing.catalog import DEFAULT_QUEUE_MODEL, QUEUE_MODELS, make_queue_model, params_from_perf
from inferno.queueing.contract import QueueMetrics, QueueModel, Sizing, Targets, Workload
from inferno.queueing.iteration import IterationQueue
from inferno.queueing.linear import LinearQueue
from inferno.queueing.mm1k import MM1KQueue
from inferno.queueing.sizing import BATCH_POLICIES, choose_batch, size

__all__ = [
    "BATCH_POLICIES",
    "DEFAULT_QUEUE_MODEL",
    "QUEUE_MODELS",
    "IterationQueue",
    "LinearQueue",
    "MM1KQueue",
    "QueueMetrics",
    "QueueModel",
    "Sizing",
    "Targets",
    "Workload",
    "choose_batch",
    "make_queue_model",
    "params_from_perf",
    "size",
]
