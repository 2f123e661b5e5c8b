"""The queue model as an observation function, its numerical Jacobian, and the initial least-squares fit.

h(x) is the queue model's mean [TTFT, ITL] (ms) at an observation's rate, batch, queue and token
lengths with parameter vector x (in the model's ``param_names`` order). The fit minimises the sum of
squared relative errors sum ((h - z) / z)^2 over log-parameters with Nelder-Mead, so every parameter
stays positive. Identifiability is judged by the condition number of the Jacobian of the relative
residuals with respect to the log-parameters: each entry is an elasticity, so the figure does not
depend on the parameters' units (design section 6).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize

from inferno.errors import ConfigError, ModelError
from inferno.queueing import QUEUE_MODELS, QueueModel
from inferno.tuner.observation import Observation

Vector = npt.NDArray[np.float64]

GRID_DECADES = (-6.0, -4.0, -2.0, 0.0, 2.0)
"""log10 of the values each parameter takes in the coarse search that starts a fit without a seed."""

UNFIT = 1e30
"""Objective value of parameters the queue model cannot evaluate."""

PRIOR_WEIGHT = 1e-4
"""Weight of a weak pull of the log-parameters towards a known start (configured values, the running
estimate): a parameter the observations hardly determine stays near what was known instead of running
off to 0 or infinity. Small against the data: a 5% error costs 2.5e-3 per latency, moving a parameter
by a factor e costs 1e-4."""

GRID_PRIOR_WEIGHT = 1e-6
"""The same pull towards the point of the coarse search, which is not knowledge: only a guard."""

PRIOR_LOG_STD = 2.0
"""Before any data a parameter is taken to be known within a factor e^2 = 7.4 (one standard deviation of its
log): this bounds the covariance a fit hands to the filter in the directions the observations leave open."""


def param_names(queue_model: str) -> tuple[str, ...]:
    """The parameter names of queue model ``queue_model``, in state-vector order; ConfigError when unknown."""
    if queue_model not in QUEUE_MODELS:
        raise ConfigError(f"unknown queue model {queue_model!r}; choose one of: {', '.join(QUEUE_MODELS)}")
    return QUEUE_MODELS[queue_model].param_names


def predict(model: QueueModel, x: Vector, obs: Observation) -> Vector:
    """h(x): the model's mean [TTFT, ITL] (ms) at the operating point of ``obs``; ModelError if it cannot tell."""
    tuned = model.with_params({name: float(v) for name, v in zip(model.param_names, x, strict=True)})
    metrics = tuned.analyze(obs.rate_rps, obs.workload, obs.max_batch, obs.max_queue)
    return np.array([metrics.ttft_ms, metrics.itl_ms])


def measured(obs: Observation) -> Vector:
    """z: the observed mean [TTFT, ITL] (ms)."""
    return np.array([obs.ttft_ms, obs.itl_ms])


def jacobian(fn: Callable[[Vector], Vector], x: Vector, step: float) -> Vector:
    """d fn / d x by central differences, with a step of ``step`` times each component."""
    columns = []
    for j in range(len(x)):
        dx = np.zeros_like(x)
        dx[j] = step * x[j]
        columns.append((fn(x + dx) - fn(x - dx)) / (2 * dx[j]))
    return np.column_stack(columns)


def elasticities(model: QueueModel, x: Vector, observations: Sequence[Observation], step: float) -> Vector:
    """Jacobian of the relative residuals (h - z) / z with respect to log x: 2 rows per observation."""
    rows = []
    for obs in observations:

        def h(v: Vector, obs: Observation = obs) -> Vector:
            return predict(model, v, obs)

        rows.append(jacobian(h, x, step) * x / measured(obs)[:, None])
    return np.vstack(rows)


def condition_number(jac: Vector) -> float:
    """Largest over smallest singular value; infinite when there are fewer rows than parameters or rank is lost."""
    if jac.shape[0] < jac.shape[1]:
        return math.inf
    singular = np.linalg.svd(jac, compute_uv=False)
    return float(singular[0] / singular[-1]) if singular[-1] > 0 else math.inf


@dataclass(frozen=True)
class Fit:
    """A least-squares fit of the parameters to a set of observations."""

    x: Vector
    """Fitted parameter vector."""
    rms: float
    """Root mean square of the relative errors (both latencies of every observation)."""
    condition: float
    """Condition number of the log-parameter Jacobian at ``x``."""
    identifiable: bool
    """``condition`` is at most the limit: the data pin every parameter down."""
    evaluations: int
    """Objective evaluations spent."""
    jacobian: Vector | None = None
    """Jacobian of the relative residuals with respect to log x at ``x`` (None when it cannot be evaluated)."""

    def covariance(self, sigma: float) -> Vector | None:
        """Covariance of x after the fit when each relative error has standard deviation ``sigma``.

        Gauss-Newton with the prior of PRIOR_LOG_STD: Cov(log x) = (J'J / sigma^2 + I / PRIOR_LOG_STD^2)^-1,
        then Cov(x) = diag(x) Cov(log x) diag(x). None without a Jacobian.
        """
        if self.jacobian is None:
            return None
        information = self.jacobian.T @ self.jacobian / sigma**2 + np.eye(len(self.x)) / PRIOR_LOG_STD**2
        return np.asarray(np.linalg.inv(information) * np.outer(self.x, self.x), dtype=np.float64)


def fit(
    model: QueueModel,
    observations: Sequence[Observation],
    start: Vector | None,
    *,
    max_evaluations: int,
    max_condition: float,
    step: float,
) -> Fit:
    """Nelder-Mead fit of the relative squared errors over log-parameters, from ``start`` or a coarse search."""
    targets = np.array([measured(o) for o in observations])

    def errors(u: Vector) -> float:
        try:
            predicted = np.array([predict(model, np.exp(u), o) for o in observations])
        except ModelError:
            return UNFIT
        value = float(np.sum((predicted / targets - 1) ** 2))
        return value if math.isfinite(value) else UNFIT

    evaluations = 0
    if start is None:
        grid = [np.array(p) * math.log(10) for p in itertools.product(GRID_DECADES, repeat=len(model.param_names))]
        values = [errors(u) for u in grid]
        evaluations += len(grid)
        u, spread = grid[int(np.argmin(values))], math.log(10)
    else:
        u, spread = np.log(start), math.log(2)
    centre, weight = u.copy(), GRID_PRIOR_WEIGHT if start is None else PRIOR_WEIGHT

    def cost(u: Vector) -> float:
        return errors(u) + weight * float(np.sum((u - centre) ** 2))

    best = UNFIT
    while evaluations < max_evaluations:  # restart from the result until it stops improving
        simplex = np.vstack([u, u + spread * np.eye(len(u))])
        result = minimize(
            cost,
            u,
            method="Nelder-Mead",
            options={
                "initial_simplex": simplex,
                "maxfev": max_evaluations - evaluations,
                "xatol": 1e-3,
                "fatol": 1e-9,
            },
        )
        evaluations += int(result.nfev)
        improved = float(result.fun) < best * (1 - 1e-6)
        u, best, spread = np.asarray(result.x, dtype=np.float64), float(result.fun), math.log(1.2)
        if not improved:
            break
    x = np.exp(u)
    if best >= UNFIT:
        return Fit(x, math.inf, math.inf, False, evaluations)
    try:
        jac: Vector | None = elasticities(model, x, observations, step)
    except ModelError:
        jac = None
    condition = math.inf if jac is None else condition_number(jac)
    rms = math.sqrt(errors(u) / targets.size)
    return Fit(x, rms, condition, condition <= max_condition, evaluations, jac)
