"""The queue models by name, and their parameters from a model's performance data."""

from __future__ import annotations

from collections.abc import Mapping

from inferno.errors import ConfigError, ModelError
from inferno.queueing.contract import QueueModel, checked_params
from inferno.queueing.iteration import IterationQueue
from inferno.queueing.linear import LinearQueue
from inferno.queueing.mm1k import MM1KQueue
from inferno.spec import DEFAULT_MAX_BATCHED_TOKENS, ModelAcceleratorPerfData

QUEUE_MODELS: dict[str, type[IterationQueue] | type[LinearQueue] | type[MM1KQueue]] = {
    MM1KQueue.name: MM1KQueue,
    LinearQueue.name: LinearQueue,
    IterationQueue.name: IterationQueue,
}
"""Queue model classes by name."""

DEFAULT_QUEUE_MODEL = IterationQueue.name
"""The queue model used when none is named."""


def _model_class(name: str) -> type[IterationQueue] | type[LinearQueue] | type[MM1KQueue]:
    """The class of queue model ``name``, or ConfigError listing the valid names."""
    try:
        return QUEUE_MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown queue model {name!r}; choose one of: {', '.join(QUEUE_MODELS)}") from None


def make_queue_model(
    name: str, params: Mapping[str, float], *, max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS
) -> QueueModel:
    """Queue model ``name`` with ``params``; ``max_batched_tokens`` is M of the models with chunked prefill.

    Unknown name: ConfigError listing the names. Missing, unknown, non-finite or non-positive
    parameters: ModelError.
    """
    cls = _model_class(name)
    values = checked_params(name, cls.param_names, params)
    if cls is LinearQueue:
        return LinearQueue(**values)
    iteration = IterationQueue(values["alpha"], values["beta"], values["gamma"], max_batched_tokens)
    return MM1KQueue(iteration) if cls is MM1KQueue else iteration


def params_from_perf(name: str, row: ModelAcceleratorPerfData) -> dict[str, float]:
    """The parameters queue model ``name`` takes, from a performance row.

    "inferno-2025" takes the 2025 form (decodeParms alpha, beta; prefillParms gamma, delta); "iteration"
    and "mm1k" take the 2026 form (perfParms alpha, beta, gamma). ModelError when the row lacks that form.
    """
    _model_class(name)
    where = f"model {row.name!r} on {row.acc!r}"
    if name == LinearQueue.name:
        if row.decode_parms is None or row.prefill_parms is None:
            raise ModelError(f"{where}: queue model {name!r} needs decodeParms and prefillParms (2025 form)")
        return {
            "alpha": row.decode_parms.alpha,
            "beta": row.decode_parms.beta,
            "gamma": row.prefill_parms.gamma,
            "delta": row.prefill_parms.delta,
        }
    if row.perf_parms is None:
        raise ModelError(f"{where}: queue model {name!r} needs perfParms (2026 form)")
    return {"alpha": row.perf_parms.alpha, "beta": row.perf_parms.beta, "gamma": row.perf_parms.gamma}
