"""Tuned parameters into the optimizer's model data: a pure function of the configured system and the estimates."""

from __future__ import annotations

from collections.abc import Mapping

from inferno.errors import ModelError
from inferno.queueing import DEFAULT_QUEUE_MODEL
from inferno.spec import DecodeParms, ModelAcceleratorPerfData, ModelData, PerfParms, PrefillParms, SystemSpec
from inferno.tuner.fit import param_names
from inferno.tuner.observation import Key

LINEAR = "inferno-2025"
"""The queue model whose parameters are the 2025 decode/prefill form; every other one takes perfParms."""


def merge_estimates(
    spec: SystemSpec, estimates: Mapping[Key, Mapping[str, float]], queue_model: str = DEFAULT_QUEUE_MODEL
) -> SystemSpec:
    """``spec`` with the performance rows of tuned (model, accelerator) pairs carrying the tuned parameters.

    The parameters of ``queue_model`` replace ``perfParms`` (iteration, mm1k) or ``decodeParms`` and
    ``prefillParms`` (inferno-2025); the other form of a row and every untuned row stay as configured.
    Estimates of pairs without a performance row are ignored. ModelError when an estimate lacks a
    parameter of the queue model; ConfigError for an unknown queue model.
    """
    if not estimates:
        return spec
    names = param_names(queue_model)
    rows = []
    for row in spec.model_data.models:
        tuned = estimates.get((row.name, row.acc))
        rows.append(row if tuned is None else _tuned_row(row, tuned, queue_model, names))
    return spec.model_copy(update={"model_data": ModelData(models=tuple(rows))})


def _tuned_row(
    row: ModelAcceleratorPerfData, params: Mapping[str, float], queue_model: str, names: tuple[str, ...]
) -> ModelAcceleratorPerfData:
    missing = [n for n in names if n not in params]
    if missing:
        raise ModelError(f"estimate of {row.name!r} on {row.acc!r} lacks {', '.join(missing)}")
    p = {n: float(params[n]) for n in names}
    if queue_model == LINEAR:
        return row.model_copy(
            update={
                "decode_parms": DecodeParms(alpha=p["alpha"], beta=p["beta"]),
                "prefill_parms": PrefillParms(gamma=p["gamma"], delta=p["delta"]),
            }
        )
    return row.model_copy(update={"perf_parms": PerfParms(alpha=p["alpha"], beta=p["beta"], gamma=p["gamma"])})
