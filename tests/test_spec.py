"""Tests of the pydantic interface models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferno.spec import (
    AcceleratorSpec,
    LoadSpec,
    ModelAcceleratorPerfData,
    OptimizerSpec,
    SaturationPolicy,
    ServerSpec,
    ServiceClassSpec,
)


def test_keys_match_case_insensitively() -> None:
    """Keys like 'milpsolver' and 'AvgInTokens' map onto the canonical fields."""
    opt = OptimizerSpec.model_validate({"milpsolver": True, "SATURATIONPOLICY": "RoundRobin"})
    assert opt.milp_solver is True
    assert opt.saturation_policy is SaturationPolicy.ROUND_ROBIN
    load = LoadSpec.model_validate({"arrivalRate": 60, "AvgInTokens": 128, "avgouttokens": 1024})
    assert (load.arrival_rate, load.avg_in_tokens, load.avg_out_tokens) == (60, 128, 1024)


def test_output_uses_canonical_spelling() -> None:
    """Dumps use the reference key names, whatever case came in."""
    load = LoadSpec.model_validate({"AvgInTokens": 5})
    assert load.model_dump() == {"arrivalRate": 0.0, "avgInTokens": 5.0, "avgOutTokens": 0.0}


def test_unknown_key_is_rejected_with_its_name() -> None:
    """An unknown key fails validation at its own path."""
    with pytest.raises(ValidationError) as info:
        AcceleratorSpec.model_validate({"name": "A100", "type": "A100", "cost": 1, "colour": "green"})
    assert info.value.errors()[0]["loc"] == ("colour",)


def test_same_key_twice_in_different_case_is_rejected() -> None:
    """'cost' and 'Cost' in one object are ambiguous and rejected."""
    with pytest.raises(ValidationError, match="given twice"):
        AcceleratorSpec.model_validate({"name": "A", "type": "A", "cost": 1, "Cost": 2})


def test_models_are_frozen() -> None:
    """Specs cannot be changed after validation."""
    acc = AcceleratorSpec(name="A100", type="A100", cost=40)
    with pytest.raises(ValidationError):
        acc.cost = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "A", "type": "A", "cost": -1}, "cost"),
        ({"name": "A", "type": "A", "cost": 1, "multiplicity": 0}, "multiplicity"),
        ({"name": "A", "type": "A", "cost": float("nan")}, "cost"),
    ],
)
def test_accelerator_bounds(data: dict[str, object], field: str) -> None:
    """Negative or NaN costs and zero multiplicity are rejected at the field."""
    with pytest.raises(ValidationError) as info:
        AcceleratorSpec.model_validate(data)
    assert info.value.errors()[0]["loc"] == (field,)


def test_perf_data_accepts_both_forms() -> None:
    """A perf row may carry the 2025 decode/prefill parameters or the 2026 perfParms."""
    base = {"name": "m", "acc": "A100", "maxBatchSize": 32, "atTokens": 512}
    old = ModelAcceleratorPerfData.model_validate(
        {**base, "decodeParms": {"alpha": 20, "beta": 0.4}, "prefillParms": {"gamma": 160, "delta": 0.01}}
    )
    new = ModelAcceleratorPerfData.model_validate({**base, "perfParms": {"alpha": 20, "beta": 0.04, "gamma": 0.001}})
    assert old.decode_parms is not None and old.decode_parms.beta == 0.4
    assert new.perf_parms is not None and new.perf_parms.gamma == 0.001
    assert new.max_num_batched_tokens == 8192


def test_perf_data_needs_a_complete_form() -> None:
    """decodeParms without prefillParms, or no parameters at all, is an error."""
    base = {"name": "m", "acc": "A100", "maxBatchSize": 32, "atTokens": 512}
    with pytest.raises(ValidationError, match="together"):
        ModelAcceleratorPerfData.model_validate({**base, "decodeParms": {"alpha": 1, "beta": 1}})
    with pytest.raises(ValidationError, match="perfParms"):
        ModelAcceleratorPerfData.model_validate(base)


def test_service_class_defaults_and_priority_range() -> None:
    """Priority defaults to 100 and must lie in 1..100."""
    assert ServiceClassSpec(name="Free").priority == 100
    with pytest.raises(ValidationError):
        ServiceClassSpec.model_validate({"name": "x", "priority": 0})


def test_server_defaults_and_replica_bounds() -> None:
    """A server defaults to class Free; max replicas below min is rejected."""
    srv = ServerSpec.model_validate({"name": "s", "model": "m"})
    assert srv.class_name == "Free"
    assert srv.current_alloc.load.arrival_rate == 0
    with pytest.raises(ValidationError, match="below minNumReplicas"):
        ServerSpec.model_validate({"name": "s", "model": "m", "minNumReplicas": 3, "maxNumReplicas": 2})
