"""One extended Kalman filter over a queue model's parameter vector (design section 6).

The state is the parameter vector x; it follows a random walk (F = I, Q = diag((q x)^2)). A
measurement is one replica's mean [TTFT, ITL] and h(x) is the queue model's prediction at that
replica's operating point; H is its central-difference Jacobian (step 1% of each parameter). The
filter compares latencies on a log scale, log z against log h(x): near the queueing knee TTFT grows
steeply with the parameters and its logarithm is far closer to linear, which is what an EKF needs. To
first order this is the design's filter: a log innovation is a relative one, and R becomes
diag(((e / 1.96) E / z)^2), which is (e / 1.96)^2 when E is the observation itself.

An update is rolled back when it makes a parameter <= 0 (or not finite), or, outside warm-up, when its
normalised innovation squared y' S^-1 y reaches the chi-square limit; an accepted update is clipped
to [x / b, b x] of the estimate before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from filterpy.kalman import ExtendedKalmanFilter

from inferno.errors import ModelError
from inferno.queueing import QueueModel
from inferno.tuner.fit import Fit, Vector, jacobian, measured, predict
from inferno.tuner.observation import Observation
from inferno.tuner.settings import CONFIDENCE_Z, TunerSettings


@dataclass(frozen=True)
class Step:
    """What one measurement did to the filter."""

    nis: float | None
    """Normalised innovation squared y' S^-1 y; None when the model could not be evaluated."""
    accepted: bool
    gate: str = ""
    """Why it was rolled back: 'nis', 'positivity' or 'model'; '' when accepted."""
    reason: str = ""
    """The same for a person."""
    clipped: bool = False
    """Some parameter was held to the bounds around the previous estimate."""


def log_measurement_noise(obs: Observation, settings: TunerSettings) -> Vector:
    """R of log latencies: diag(((e / 1.96) E / z)^2), E the expected [TTFT, ITL] or, when not set, z itself."""
    z = measured(obs)
    expected = z if settings.expected_ms is None else np.array(settings.expected_ms, dtype=np.float64)
    return np.diag((settings.error_level / CONFIDENCE_Z * expected / z) ** 2)


class ParamFilter:
    """An extended Kalman filter whose state is the parameter vector of one queue model."""

    def __init__(self, model: QueueModel, x: Vector, covariance: Vector, settings: TunerSettings) -> None:
        n = len(model.param_names)
        if x.shape != (n,) or covariance.shape != (n, n):
            raise ModelError(f"filter state must have {n} parameters and a {n}x{n} covariance")
        self.model = model
        self.settings = settings
        self.ekf = ExtendedKalmanFilter(dim_x=n, dim_z=2)
        self.ekf.x = np.array(x, dtype=np.float64)
        self.ekf.P = np.array(covariance, dtype=np.float64)

    @classmethod
    def start(cls, model: QueueModel, result: Fit, settings: TunerSettings) -> ParamFilter:
        """A filter at a fit: P0 = the fit's covariance (relative error e / 1.96) + diag((initial_std x)^2)."""
        floor = np.diag((settings.initial_std * result.x) ** 2)
        fitted = result.covariance(settings.error_level / CONFIDENCE_Z)
        return cls(model, result.x, floor if fitted is None else fitted + floor, settings)

    @property
    def x(self) -> Vector:
        """The current estimate (a copy)."""
        return np.array(self.ekf.x, dtype=np.float64)

    @property
    def covariance(self) -> Vector:
        """The current covariance P (a copy)."""
        return np.array(self.ekf.P, dtype=np.float64)

    def params(self) -> dict[str, float]:
        """The current estimate by parameter name."""
        return {name: float(v) for name, v in zip(self.model.param_names, self.ekf.x, strict=True)}

    def predict(self) -> None:
        """Random-walk time update: x stays, P grows by Q = diag((q x)^2)."""
        self.ekf.Q = np.diag((self.settings.process_noise * self.ekf.x) ** 2)
        self.ekf.predict()

    def update(self, obs: Observation, *, gate: bool) -> Step:
        """Measurement update with ``obs``; rolled back by the positivity gate and, when ``gate``, the NIS gate."""
        before_x, before_p = self.x, self.covariance
        step = self.settings.jacobian_step
        try:
            self.ekf.update(
                np.log(measured(obs)),
                HJacobian=lambda x: jacobian(lambda v: np.log(predict(self.model, v, obs)), x, step),
                Hx=lambda x: np.log(predict(self.model, x, obs)),
                R=log_measurement_noise(obs, self.settings),
            )
        except (ModelError, np.linalg.LinAlgError) as exc:
            self._restore(before_x, before_p)
            return Step(None, False, "model", f"the queue model cannot be evaluated here: {exc}")
        y = np.asarray(self.ekf.y, dtype=np.float64)
        nis = float(y @ np.asarray(self.ekf.SI) @ y)
        x = self.x
        bad = [n for n, v in zip(self.model.param_names, x, strict=True) if not (math.isfinite(v) and v > 0)]
        if bad or not math.isfinite(nis):
            self._restore(before_x, before_p)
            return Step(nis, False, "positivity", f"the update makes {', '.join(bad) or 'NIS'} non-positive or NaN")
        if gate and nis >= self.settings.max_nis:
            self._restore(before_x, before_p)
            return Step(nis, False, "nis", f"NIS {nis:.3g} >= {self.settings.max_nis:g}: an outlier")
        factor = self.settings.bound_factor
        bounded = np.clip(x, before_x / factor, before_x * factor)
        self.ekf.x = bounded
        return Step(nis, True, clipped=bool(np.any(bounded != x)))

    def inflate(self, factor: float) -> None:
        """Multiply P by ``factor`` (>= 1): trust the estimate less, the next measurements more."""
        self.ekf.P = self.ekf.P * factor

    def _restore(self, x: Vector, covariance: Vector) -> None:
        self.ekf.x, self.ekf.P = x, covariance

    def to_dict(self) -> dict[str, Any]:
        """The estimate and covariance as JSON-ready lists."""
        return {"x": self.x.tolist(), "P": self.covariance.tolist()}

    @classmethod
    def from_dict(cls, model: QueueModel, data: dict[str, Any], settings: TunerSettings) -> ParamFilter:
        """A filter from :meth:`to_dict` data; ModelError when the shapes or values do not fit the model."""
        try:
            x = np.array(data["x"], dtype=np.float64)
            covariance = np.array(data["P"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"filter state needs numeric 'x' and 'P': {exc}") from exc
        if not (np.all(np.isfinite(x)) and np.all(x > 0) and np.all(np.isfinite(covariance))):
            raise ModelError("filter state holds non-positive or non-finite values")
        return cls(model, x, covariance, settings)
