"""The tuner's settings: noise levels, gates, bounds and the initial fit (design section 6).

Two defaults differ from the design's figures, on measurements (docs/tuner.md): the process noise is
0.002 rather than 0.1 (a 10% random walk per cycle leaves the estimates so restless that predictions
are 7-15% off at worst instead of 3-6%; a change of the truth is caught by the NIS streak and a refit
instead), and R is relative to each observation rather than to fixed expected latencies of 1000 and
100 ms (which made the filter deaf to replicas with latencies ten times smaller, so a slower version
was never tracked). Both design values remain settable.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

CONFIDENCE_Z = 1.96
"""A measurement is taken to lie within +-error_level of the expected value with 95% confidence."""


class TunerSettings(BaseModel):
    """How the extended Kalman filter and its initial fit behave."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    process_noise: float = Field(
        0.002, gt=0, description="Q = diag((process_noise * x)^2): relative drift of each parameter per cycle."
    )
    error_level: float = Field(
        0.2, gt=0, description="e: relative error of a measurement at 95% confidence; R = diag((e/1.96)^2 E^2)."
    )
    expected_ms: tuple[float, float] | None = Field(
        None,
        description="E: expected [TTFT, ITL] (ms) that scale R; none = each observation's own values (relative R).",
    )
    initial_std: float = Field(
        0.1,
        gt=0,
        description="P0 after a fit = the fit's own covariance + diag((initial_std * x0)^2): extra relative doubt.",
    )
    bound_factor: float = Field(
        10.0, gt=1, description="An update is clipped to [x / bound_factor, x * bound_factor] of the estimate before."
    )
    max_nis: float = Field(
        7.378, gt=0, description="Reject an update whose normalised innovation squared y' S^-1 y reaches this."
    )
    fading_limit: float = Field(
        10.0,
        ge=1,
        description="Most P is multiplied by after a cycle whose accepted updates have a mean NIS above 2 "
        "(innovations larger than the filter expects: the truth is moving); 1 = never.",
    )
    jacobian_step: float = Field(0.01, gt=0, lt=1, description="Central-difference step, relative to each parameter.")
    warmup_cycles: int = Field(3, ge=0, description="Cycles after a fit in which the NIS gate is off.")
    fit_min_observations: int = Field(6, ge=1, description="Valid observations needed before the first fit.")
    fit_window: int = Field(
        48, ge=1, description="Recent observations kept per filter for fits and the identifiability check."
    )
    max_condition: float = Field(
        1000.0, gt=1, description="Condition number of the log-parameter Jacobian above which data are ill-conditioned."
    )
    hold_condition: float = Field(
        1e5,
        gt=1,
        description="A running filter is held while its window's condition number exceeds this (one operating point "
        "gives 1e16); between max_condition and this, its covariance keeps weakly determined parameters in place.",
    )
    shift_nis: float = Field(
        4.605,
        gt=0,
        description="A cycle whose median NIS reaches this (chi-square, 2 dof, 90%) disagrees with the estimate.",
    )
    refit_after: int = Field(
        3, ge=1, description="Consecutive disagreeing cycles after which the parameters are refitted on them."
    )
    fit_max_evaluations: int = Field(600, ge=10, description="Objective evaluations of one Nelder-Mead run.")
    fit_points: int = Field(
        24,
        ge=2,
        description="Most observations one fit uses, spread evenly over their rates (a fit costs ~30 ms each).",
    )
    max_updates: int = Field(
        16,
        ge=2,
        description="Most observations of one (model, accelerator) used per cycle; with more replicas, this many "
        "spread evenly over their rates are used (the rest are redundant operating points and cost time).",
    )
