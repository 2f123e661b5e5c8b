"""Traffic shapes: how many requests arrive when, and how long they are.

A :class:`TrafficSpec` is the JSON/YAML description (pydantic, frozen, unknown keys rejected): an
``arrivals`` shape chosen by its ``shape`` key, and the distributions of input and output tokens.

- ``steady``: a constant ``rate_rps``.
- ``ramp``: ``from_rps`` until ``start_s``, then linearly to ``to_rps`` over ``duration_s``, then ``to_rps``.
- ``diurnal``: ``mean_rps * (1 + amplitude * cos(2 pi (t - peak_s) / period_s))``: the peak is at ``peak_s``
  (and every period after it), the trough half a period later; the mean over a period is ``mean_rps``.
- ``bursty``: a ``base`` shape multiplied by bursts. A burst multiplies the rate by ``factor`` between
  ``at_s`` and ``at_s + duration_s``, rising linearly over its first ``min(120 s, duration_s / 2)`` and
  falling back over as long at its end (a trapezoid). ``flash_crowds`` add random bursts: a Poisson
  number ``per_day`` on average each day, at uniform times, drawn from their own ``seed`` (so ``rate``
  is a fixed function of time). Overlapping bursts multiply.
- ``trace``: the rows of a CSV file (``timestamp_s,input_tokens,output_tokens``, with that header)
  replayed with their timestamps taken relative to the first row; with ``loop`` the trace repeats every
  span (last minus first timestamp plus one mean gap). Its ``rate`` is the mean rate of the rows within
  the :data:`TRACE_BIN_S` bin that holds ``t``, and its token means those of that bin.

Token lengths are ``exponential`` (geometric: the discrete exponential), ``lognormal`` (``sigma`` is the
standard deviation of log tokens) or ``fixed``, each with the given ``mean``.

:class:`Traffic` is built from a spec and answers ``rate(t)`` (req/s; ``t`` a float or a numpy array),
``mean_tokens(t)`` and ``requests(start_s, end_s, rng)``: the arrivals in ``[start_s, end_s)``, drawn as a
non-homogeneous Poisson process by thinning (or the trace rows in the window). Times are in seconds.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, overload

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inferno.errors import ConfigError, Problem
from inferno.sim.simulation import Lengths

__all__ = [
    "ArrivalSpec",
    "Burst",
    "BurstySpec",
    "DiurnalSpec",
    "FlashCrowds",
    "LengthSpec",
    "RampSpec",
    "Requests",
    "SteadySpec",
    "TraceSpec",
    "Traffic",
    "TrafficSpec",
]

DAY_S = 86_400.0
MAX_RISE_S = 120.0
"""A burst reaches its factor within this time (or half its duration when shorter)."""
TRACE_BIN_S = 60.0
"""Width of the bins over which a trace's rate and token means are reported."""
THINNING_CHUNK_S = 300.0
"""Arrivals are drawn in windows of this length, each with its own bound on the rate."""

Floats = npt.NDArray[np.float64]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LengthSpec(_Spec):
    """A distribution of tokens per request (integers >= 1)."""

    mean: float = Field(ge=1, allow_inf_nan=False, description="Mean tokens per request.")
    distribution: Literal["exponential", "lognormal", "fixed"] = Field(
        "exponential", description="exponential (geometric), lognormal (long-tailed) or fixed."
    )
    sigma: float = Field(1.0, gt=0, allow_inf_nan=False, description="Lognormal: standard deviation of log tokens.")

    def lengths(self) -> Lengths:
        """The sampler of this distribution."""
        kind = "constant" if self.distribution == "fixed" else self.distribution
        return Lengths(self.mean, kind, self.sigma)

    @property
    def expected(self) -> float:
        """The mean of the draws (a fixed length is rounded to whole tokens)."""
        return float(max(1, round(self.mean))) if self.distribution == "fixed" else self.mean


class SteadySpec(_Spec):
    """A constant rate."""

    shape: Literal["steady"]
    rate_rps: float = Field(ge=0, allow_inf_nan=False, description="Requests per second.")


class RampSpec(_Spec):
    """A linear change of rate between two times."""

    shape: Literal["ramp"]
    from_rps: float = Field(ge=0, allow_inf_nan=False, description="Rate before start_s (req/s).")
    to_rps: float = Field(ge=0, allow_inf_nan=False, description="Rate from start_s + duration_s on (req/s).")
    start_s: float = Field(0.0, ge=0, allow_inf_nan=False, description="When the ramp starts (s).")
    duration_s: float = Field(gt=0, allow_inf_nan=False, description="How long the ramp lasts (s).")


class DiurnalSpec(_Spec):
    """A sinusoidal daily (or any period) cycle around a mean."""

    shape: Literal["diurnal"]
    mean_rps: float = Field(ge=0, allow_inf_nan=False, description="Mean rate over a period (req/s).")
    amplitude: float = Field(ge=0, le=1, description="Relative swing: peak = mean (1 + amplitude).")
    period_s: float = Field(DAY_S, gt=0, allow_inf_nan=False, description="Length of a cycle (s).")
    peak_s: float = Field(0.0, allow_inf_nan=False, description="A time of the peak (s).")


class Burst(_Spec):
    """The rate multiplied by ``factor`` for a while (a trapezoid with rises of at most 2 minutes)."""

    at_s: float = Field(ge=0, allow_inf_nan=False, description="When the burst starts (s).")
    duration_s: float = Field(gt=0, allow_inf_nan=False, description="How long it lasts, rises included (s).")
    factor: float = Field(gt=0, allow_inf_nan=False, description="Multiplier of the rate at its height.")


class FlashCrowds(_Spec):
    """Random bursts: a Poisson number a day at uniform times."""

    per_day: float = Field(gt=0, allow_inf_nan=False, description="Mean number of crowds a day.")
    factor: float = Field(gt=0, allow_inf_nan=False, description="Multiplier of the rate at a crowd's height.")
    duration_s: float = Field(gt=0, le=DAY_S, description="How long a crowd lasts (s, at most a day).")
    seed: int = Field(0, ge=0, description="Seed of the crowds' times (independent of the requests' seed).")


class BurstySpec(_Spec):
    """A base shape with bursts and/or random flash crowds on top."""

    shape: Literal["bursty"]
    base: ArrivalSpec
    bursts: tuple[Burst, ...] = ()
    flash_crowds: FlashCrowds | None = None

    @model_validator(mode="after")
    def _some_burst(self) -> BurstySpec:
        if not self.bursts and self.flash_crowds is None:
            raise ValueError("give bursts, flash_crowds or both")
        if isinstance(self.base, TraceSpec):
            raise ValueError("a trace cannot be the base of bursts (its requests are given, not drawn)")
        return self


class TraceSpec(_Spec):
    """Requests replayed from a CSV file of timestamp_s,input_tokens,output_tokens."""

    shape: Literal["trace"]
    file: Path = Field(description="CSV with the header timestamp_s,input_tokens,output_tokens.")
    loop: bool = Field(False, description="Repeat the trace after its end.")


ArrivalSpec = Annotated[
    SteadySpec | RampSpec | DiurnalSpec | BurstySpec | TraceSpec,
    Field(discriminator="shape"),
]
"""One arrival shape, chosen by its ``shape`` key."""

BurstySpec.model_rebuild()


class TrafficSpec(_Spec):
    """Arrivals and token lengths of one stream of requests."""

    arrivals: ArrivalSpec
    in_tokens: LengthSpec = Field(
        default_factory=lambda: LengthSpec(mean=512), description="Input tokens (not with a trace)."
    )
    out_tokens: LengthSpec = Field(
        default_factory=lambda: LengthSpec(mean=128), description="Output tokens (not with a trace)."
    )

    @model_validator(mode="after")
    def _trace_has_its_lengths(self) -> TrafficSpec:
        given = self.model_fields_set & {"in_tokens", "out_tokens"}
        if isinstance(self.arrivals, TraceSpec) and given:
            raise ValueError(f"a trace gives its own token counts; remove {', '.join(sorted(given))}")
        return self


@dataclass(frozen=True)
class Requests:
    """Arrivals in time order: times (s) and token counts, as numpy arrays of one length."""

    times: Floats
    in_tokens: npt.NDArray[np.int64]
    out_tokens: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.times)


RateFn = Callable[[Floats], Floats]
BoundFn = Callable[[float, float], float]
"""The max of the rate over [start, end] (or a bound above it)."""


class Traffic:
    """A traffic stream built from a :class:`TrafficSpec`: its rate, token means and requests."""

    def __init__(self, spec: TrafficSpec, base_dir: Path | None = None) -> None:
        """Relative trace paths are read from ``base_dir`` (default: the working directory)."""
        self.spec = spec
        self._trace: _Trace | None = None
        if isinstance(spec.arrivals, TraceSpec):
            path = spec.arrivals.file
            self._trace = _Trace.read(path if path.is_absolute() or base_dir is None else base_dir / path)
            self._trace.loop = spec.arrivals.loop
            self._rate: RateFn = self._trace.rate
            self._bound: BoundFn = lambda _s, _e: math.inf
        else:
            self._rate, self._bound = _shape(spec.arrivals)
        self._in = spec.in_tokens.lengths()
        self._out = spec.out_tokens.lengths()

    @classmethod
    def from_dict(cls, data: object, base_dir: Path | None = None) -> Traffic:
        """A Traffic from JSON/YAML data; ConfigError naming each bad field."""
        try:
            spec = TrafficSpec.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(
                [Problem("traffic", ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors(include_url=False)]
            ) from exc
        return cls(spec, base_dir)

    @overload
    def rate(self, t_s: float) -> float: ...
    @overload
    def rate(self, t_s: Floats) -> Floats: ...

    def rate(self, t_s: float | Floats) -> float | Floats:
        """Requests per second at time ``t_s`` (elementwise for an array)."""
        if isinstance(t_s, np.ndarray):
            return self._rate(np.asarray(t_s, dtype=np.float64))
        return float(self._rate(np.array([t_s], dtype=np.float64))[0])

    def mean_tokens(self, t_s: float) -> tuple[float, float]:
        """Mean (input, output) tokens of requests arriving at ``t_s``."""
        if self._trace is not None:
            return self._trace.mean_tokens(t_s)
        return self.spec.in_tokens.expected, self.spec.out_tokens.expected

    def requests(self, start_s: float, end_s: float, rng: np.random.Generator) -> Requests:
        """The arrivals in ``[start_s, end_s)`` with their token counts, in time order."""
        if not (math.isfinite(start_s) and math.isfinite(end_s)):
            raise ValueError(f"the window must be finite (got {start_s}, {end_s})")
        if self._trace is not None:
            return self._trace.requests(start_s, end_s)
        times = _thin(self._rate, self._bound, start_s, end_s, rng)
        n = len(times)
        return Requests(times, self._in.sample(rng, n), self._out.sample(rng, n))


def _thin(rate: RateFn, bound: BoundFn, start: float, end: float, rng: np.random.Generator) -> Floats:
    """Non-homogeneous Poisson arrivals by thinning, window by window with a bound per window."""
    pieces = []
    edges = [*np.arange(start, end, THINNING_CHUNK_S).tolist(), end] if end > start else []
    for lo, hi in itertools.pairwise(edges):
        top = bound(lo, hi)
        if top <= 0:
            continue
        n = rng.poisson(top * (hi - lo))
        candidates = np.sort(rng.uniform(lo, hi, n))
        keep = rng.uniform(0.0, top, n) < rate(candidates)
        pieces.append(candidates[keep])
    return np.concatenate(pieces) if pieces else np.empty(0)


def _shape(spec: SteadySpec | RampSpec | DiurnalSpec | BurstySpec | TraceSpec) -> tuple[RateFn, BoundFn]:
    """The rate function of a shape and a bound of it over a window."""
    if isinstance(spec, SteadySpec):
        r = spec.rate_rps
        return (lambda t: np.full_like(t, r)), (lambda _s, _e: r)
    if isinstance(spec, RampSpec):
        ramp = spec

        def ramp_rate(t: Floats) -> Floats:
            share = np.clip((t - ramp.start_s) / ramp.duration_s, 0.0, 1.0)
            return ramp.from_rps + (ramp.to_rps - ramp.from_rps) * share

        def ramp_bound(s: float, e: float) -> float:
            return float(np.max(ramp_rate(np.array([s, e]))))

        return ramp_rate, ramp_bound
    if isinstance(spec, DiurnalSpec):
        d = spec

        def diurnal_rate(t: Floats) -> Floats:
            return d.mean_rps * (1.0 + d.amplitude * np.cos(2 * np.pi * (t - d.peak_s) / d.period_s))

        return diurnal_rate, (lambda _s, _e: d.mean_rps * (1.0 + d.amplitude))
    if isinstance(spec, BurstySpec):
        base_rate, base_bound = _shape(spec.base)
        bursts = list(spec.bursts)
        crowds = spec.flash_crowds

        def active(s: float, e: float) -> list[Burst]:
            found = [b for b in bursts if b.at_s < e and b.at_s + b.duration_s > s]
            return found + (_crowds(crowds, s, e) if crowds else [])

        def bursty_rate(t: Floats) -> Floats:
            if len(t) == 0:
                return np.empty(0)
            lo, hi = float(np.min(t)), float(np.max(t))
            factor = np.ones_like(t)
            for b in active(lo, hi + 1e-9):
                factor *= _multiplier(b, t)
            return base_rate(t) * factor

        def bursty_bound(s: float, e: float) -> float:
            return base_bound(s, e) * math.prod(max(1.0, b.factor) for b in active(s, e))

        return bursty_rate, bursty_bound
    raise TypeError(f"no rate function for {type(spec).__name__}")  # a trace is handled by _Trace


def _multiplier(burst: Burst, t: Floats) -> Floats:
    """The burst's multiplier at ``t``: 1 outside, ``factor`` at its height, linear on its rise and fall."""
    rise = min(MAX_RISE_S, burst.duration_s / 2)
    into = t - burst.at_s
    height = np.clip(np.minimum(into, burst.duration_s - into) / rise, 0.0, 1.0)
    return 1.0 + (burst.factor - 1.0) * height


def _crowds(spec: FlashCrowds, start: float, end: float) -> list[Burst]:
    """The flash crowds that overlap [start, end]: those of each day are drawn from (seed, day)."""
    found = []
    first = math.floor(start / DAY_S) - 1  # a crowd of the day before may last into this one
    for day in range(max(0, first), math.floor(end / DAY_S) + 1):
        rng = np.random.default_rng([spec.seed, day])
        for at in np.sort(rng.uniform(day * DAY_S, (day + 1) * DAY_S, rng.poisson(spec.per_day))):
            if at < end and at + spec.duration_s > start:
                found.append(Burst(at_s=float(at), duration_s=spec.duration_s, factor=spec.factor))
    return found


class _Trace:
    """The rows of a trace file, times relative to the first row."""

    def __init__(self, times: Floats, in_tokens: npt.NDArray[np.int64], out_tokens: npt.NDArray[np.int64]) -> None:
        self.times, self.in_tokens, self.out_tokens = times, in_tokens, out_tokens
        gap = float(times[-1] / (len(times) - 1)) if len(times) > 1 and times[-1] > 0 else 1.0
        self.span = float(times[-1]) + gap
        """Length of one pass of the trace (the loop period)."""
        self.loop = False

    @classmethod
    def read(cls, path: Path) -> _Trace:
        """Read a CSV trace; ConfigError with the file and row of any problem."""
        where = str(path)
        try:
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.reader(f))
        except OSError as exc:
            raise ConfigError([Problem(where, "", f"cannot read: {exc.strerror or exc}")]) from exc
        header = [h.strip() for h in rows[0]] if rows else []
        if header != ["timestamp_s", "input_tokens", "output_tokens"]:
            raise ConfigError([Problem(where, "line 1", "expected the header timestamp_s,input_tokens,output_tokens")])
        values = []
        for number, row in enumerate(rows[1:], 2):
            if not row or not "".join(row).strip():
                continue
            try:
                t, n_in, n_out = float(row[0]), int(row[1]), int(row[2])
            except (ValueError, IndexError):
                raise ConfigError([Problem(where, f"line {number}", f"expected 3 numbers, got {row}")]) from None
            if not math.isfinite(t) or n_in < 1 or n_out < 1:
                raise ConfigError([Problem(where, f"line {number}", "need a finite time and token counts >= 1")])
            values.append((t, n_in, n_out))
        if not values:
            raise ConfigError([Problem(where, "", "the trace has no rows")])
        values.sort(key=lambda v: v[0])
        data = np.array(values, dtype=np.float64)
        return cls(data[:, 0] - data[0, 0], data[:, 1].astype(np.int64), data[:, 2].astype(np.int64))

    def _fold(self, t: Floats) -> Floats:
        return np.mod(t, self.span) if self.loop else t

    def rate(self, t: Floats) -> Floats:
        """Rows per second in the bin of each time."""
        folded = self._fold(t)
        lo = np.floor(folded / TRACE_BIN_S) * TRACE_BIN_S
        hi = lo + TRACE_BIN_S
        width = np.minimum(hi, self.span) - lo
        counts = np.searchsorted(self.times, hi, "left") - np.searchsorted(self.times, lo, "left")
        inside = (folded >= 0) & (self.loop | (folded < self.span))
        return np.where(inside & (width > 0), counts / np.maximum(width, 1e-12), 0.0)

    def mean_tokens(self, t: float) -> tuple[float, float]:
        """Mean tokens of the rows in the bin of ``t`` (of the whole trace when the bin is empty)."""
        folded = float(self._fold(np.array([t]))[0])
        lo = math.floor(folded / TRACE_BIN_S) * TRACE_BIN_S
        i, j = np.searchsorted(self.times, [lo, lo + TRACE_BIN_S], "left")
        sel = slice(int(i), int(j)) if j > i else slice(None)
        return float(np.mean(self.in_tokens[sel])), float(np.mean(self.out_tokens[sel]))

    def requests(self, start: float, end: float) -> Requests:
        """The rows in [start, end), repeated every span when looping."""
        if end <= start:
            return Requests(np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64))
        passes = range(math.floor(start / self.span), math.floor(end / self.span) + 1) if self.loop else range(1)
        times, ins, outs = [], [], []
        for k in passes:
            shifted = self.times + k * self.span
            i, j = np.searchsorted(shifted, [start, end], "left")
            times.append(shifted[i:j])
            ins.append(self.in_tokens[i:j])
            outs.append(self.out_tokens[i:j])
        return Requests(np.concatenate(times), np.concatenate(ins), np.concatenate(outs))
