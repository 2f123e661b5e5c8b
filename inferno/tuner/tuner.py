"""The online tuner: one extended Kalman filter per (model, accelerator), fed each cycle with observations.

Life of a key. *Collecting*: valid observations are gathered until there are enough for a Nelder-Mead
fit; a fit is adopted when the data identify every parameter (condition number of the log-parameter
Jacobian at most ``max_condition``) and it explains them (rms relative error at most the error level);
until then the configured parameters stay in force. *Warm-up*: the filter starts at the fit, with the
fit's own covariance, and runs ``warmup_cycles`` cycles without the NIS gate. *Tracking*: every cycle
is one random-walk prediction and one measurement update per observation, with the gates on.

Three guards keep it sane. When the recent observations become rank-deficient (every replica at one
operating point for a long time: condition number above ``hold_condition``) the filter is held: no
update, the estimate is kept. When the accepted updates of a cycle have a mean NIS above 2, the
innovations are larger than the filter expects and P is inflated (at most ``fading_limit`` times).
When the median NIS of ``refit_after`` cycles in a row reaches ``shift_nis``, the truth has moved (a new
vLLM version): the parameters are refitted on those cycles' observations, starting from and pulled
towards the running estimate, and the filter restarts there. A burst of outliers shorter than that is
rejected by the NIS gate and forgotten.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from inferno.errors import ConfigError, ModelError
from inferno.logs import get_logger
from inferno.queueing import DEFAULT_QUEUE_MODEL, QueueModel, make_queue_model, params_from_perf
from inferno.spec import DEFAULT_MAX_BATCHED_TOKENS, SystemSpec
from inferno.tuner.ekf import ParamFilter, Step
from inferno.tuner.fit import Fit, Vector, condition_number, elasticities, fit, param_names
from inferno.tuner.observation import Key, Observation, key_name
from inferno.tuner.settings import TunerSettings

log = get_logger(__name__)

DIM_Z = 2
"""Dimension of a measurement ([TTFT, ITL]): the mean NIS of a consistent filter."""

MAX_FIT_WAIT = 8
"""After first fits that were not adopted, they are retried 1, 2, 4, then every 8 cycles, or at once when the
window reaches an operating point it did not have."""

STATE_VERSION = 1
"""Version of the persisted state's layout."""

Phase = Literal["collecting", "warmup", "tracking"]


@dataclass(frozen=True)
class Seed:
    """Configured parameters of one (model, accelerator): where fits start and what holds until one succeeds."""

    params: dict[str, float]
    max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS


def seeds_from_spec(spec: SystemSpec, queue_model: str = DEFAULT_QUEUE_MODEL) -> dict[Key, Seed]:
    """Seeds from the performance rows that carry the parameter form ``queue_model`` takes (others are skipped)."""
    seeds = {}
    for row in spec.model_data.models:
        try:
            params = params_from_perf(queue_model, row)
        except ModelError:
            continue
        seeds[(row.name, row.acc)] = Seed(params, row.max_num_batched_tokens)
    return seeds


@dataclass(frozen=True)
class Outcome:
    """What became of one observation this cycle."""

    replica: str
    status: Literal["accepted", "rejected", "collected", "held", "skipped", "unused"]
    """accepted/rejected by the filter; collected: kept for a fit; held: the filter was held; skipped: bad data;
    unused: good data beyond the cycle's ``max_updates`` for the pair."""
    nis: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"replica": self.replica, "status": self.status, "nis": self.nis, "reason": self.reason}


@dataclass(frozen=True)
class Counters:
    """Totals of one key since its filter was created (they survive restarts)."""

    observations: int = 0
    """Observations received, bad ones included."""
    updates: int = 0
    """Measurement updates accepted."""
    rejected: int = 0
    """Measurement updates rolled back (NIS, positivity or model gate)."""
    skipped: int = 0
    """Bad observations (NaN, zero rate, negative latency, ...) never fed to the filter."""
    fits: int = 0
    """Nelder-Mead fits adopted (the first one and refits)."""


@dataclass(frozen=True)
class KeyReport:
    """One (model, accelerator) after a cycle: the estimate in force, configured vs tuned, and why."""

    model: str
    accelerator: str
    phase: Phase
    params: dict[str, float] | None
    """The parameters in force: tuned when ``tuned``, else the configured ones (None when there are none)."""
    configured: dict[str, float] | None
    tuned: bool
    """``params`` were learnt from observations."""
    identifiable: bool | None
    """Whether the latest data identified every parameter; None before any judgement."""
    condition: float | None
    """Condition number behind ``identifiable``."""
    outcomes: tuple[Outcome, ...]
    counters: Counters
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        """(model, accelerator)."""
        return (self.model, self.accelerator)

    @property
    def nis(self) -> tuple[float, ...]:
        """NIS of this cycle's measurement updates, accepted or not."""
        return tuple(o.nis for o in self.outcomes if o.nis is not None)

    def count(self, status: str) -> int:
        """How many of the cycle's observations have ``status``."""
        return sum(o.status == status for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the shape of the cycle record and of `inferno tune --json`)."""
        return {
            "key": key_name(self.key),
            "phase": self.phase,
            "params": self.params,
            "configured": self.configured,
            "tuned": self.tuned,
            "identifiable": self.identifiable,
            "condition": _json_float(self.condition),
            "nis": list(self.nis),
            "accepted": self.count("accepted"),
            "rejected": self.count("rejected"),
            "skipped": self.count("skipped"),
            "outcomes": [o.to_dict() for o in self.outcomes],
            "counters": vars(self.counters).copy(),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class TuneReport:
    """Everything one tuner cycle did."""

    keys: tuple[KeyReport, ...]
    skipped: tuple[Outcome, ...] = ()
    """Bad observations without a usable (model, accelerator)."""

    def key(self, model: str, accelerator: str) -> KeyReport | None:
        """The report of one key, if the tuner knows it."""
        return next((k for k in self.keys if k.key == (model, accelerator)), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"keys": [k.to_dict() for k in self.keys], "skipped": [o.to_dict() for o in self.skipped]}


class Tuner(Protocol):
    """Learns queue-model parameters per (model, accelerator) from what the replicas report, once per cycle."""

    def update(self, observations: Iterable[Observation]) -> TuneReport:
        """Take one cycle's observations; say what was learnt and what was rejected."""
        ...

    def estimates(self) -> dict[Key, dict[str, float]]:
        """Tuned parameters of every key whose filter runs (configured values are not repeated here)."""
        ...

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after a restart, as plain JSON-ready data with a version."""
        ...


@dataclass
class _Seen:
    """An observation in a key's window, with its two rows of the log-parameter Jacobian once computed."""

    obs: Observation
    rows: Vector | None = None


@dataclass
class _Entry:
    """The mutable record of one key."""

    key: Key
    model: QueueModel
    """The queue model of the key (its own parameters are irrelevant: the filter supplies them)."""
    seed: Seed | None
    phase: Phase = "collecting"
    filter: ParamFilter | None = None
    warmup_left: int = 0
    window: deque[_Seen] = field(default_factory=deque)
    """The latest valid observations (at most fit_window): fits and the identifiability check use them."""
    last_fit: Vector | None = None
    """Parameters of the latest fit, adopted or not: where the next attempt checks for rank deficiency."""
    failed_fits: int = 0
    """Consecutive first fits that were not adopted (not persisted: a restart tries at once)."""
    fit_wait: int = 0
    """Cycles still to wait before the next first-fit attempt: 1, 2, 4, then every 8 cycles after failures."""
    fit_points: frozenset[tuple[int, int, int]] = frozenset()
    """Operating points of the window at the last failed fit: a new one ends the wait."""
    streak: int = 0
    """Consecutive cycles whose median NIS reached ``shift_nis``: the observations disagree with the estimate."""
    suspect: list[Observation] = field(default_factory=list)
    """The observations of those cycles: what a refit is made on."""
    identifiable: bool | None = None
    condition: float | None = None
    counters: Counters = Counters()

    def count(self, **increments: int) -> None:
        values = vars(self.counters)
        self.counters = Counters(**{k: v + increments.get(k, 0) for k, v in values.items()})


class EKFTuner:
    """The :class:`Tuner` of the design: an extended Kalman filter per (model, accelerator).

    ``seeds`` are the configured parameters (see :func:`seeds_from_spec`); ``state`` is what
    :meth:`state` returned before a restart. The state of another queue model is ignored.
    """

    def __init__(
        self,
        queue_model: str = DEFAULT_QUEUE_MODEL,
        settings: TunerSettings | None = None,
        seeds: Mapping[Key, Seed] | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        self.queue_model = queue_model
        self.settings = settings or TunerSettings()
        self.seeds = dict(seeds or {})
        self.param_names = param_names(queue_model)
        self.entries: dict[Key, _Entry] = {}
        self.skipped = 0
        """Bad observations without a usable (model, accelerator), since the start."""
        if state is not None:
            self._restore(state)

    # --- the cycle ----------------------------------------------------------------------------

    def update(self, observations: Iterable[Observation]) -> TuneReport:
        """Feed one cycle's observations: skip bad ones, fit or filter the rest per key."""
        by_key: dict[Key, list[Observation]] = {}
        skipped: dict[Key, list[Outcome]] = {}
        orphans = []
        for obs in observations:
            reason = obs.problem()
            if reason is None:
                by_key.setdefault(obs.key, []).append(obs)
                continue
            outcome = Outcome(obs.replica, "skipped", reason=reason)
            if obs.model and obs.accelerator:
                skipped.setdefault(obs.key, []).append(outcome)
            else:
                orphans.append(outcome)
                self.skipped += 1
        reports = []
        for key in sorted(set(self.entries) | set(by_key) | set(skipped)):
            entry = self._entry(key)
            bad = skipped.get(key, [])
            entry.count(observations=len(bad), skipped=len(bad))
            outcomes, notes = self._cycle(entry, by_key.get(key, []))
            reports.append(self._report(entry, (*outcomes, *bad), notes))
        return TuneReport(tuple(reports), tuple(orphans))

    def _cycle(self, entry: _Entry, observations: list[Observation]) -> tuple[list[Outcome], list[str]]:
        """One cycle of one key; the outcome of each observation and notes for a person."""
        if not observations:
            return [], []
        entry.count(observations=len(observations))
        observations, surplus = _spread(observations, self.settings.max_updates)
        outcomes, notes = self._use(entry, observations)
        if surplus:
            reason = f"{len(observations) + len(surplus)} replicas: {len(observations)} spread over the rates are used"
            outcomes += [Outcome(o.replica, "unused", reason=reason) for o in surplus]
        return outcomes, notes

    def _use(self, entry: _Entry, observations: list[Observation]) -> tuple[list[Outcome], list[str]]:
        """Fit or filter one key's observations of a cycle."""
        seen = [_Seen(o) for o in observations]
        entry.window.extend(seen)
        if entry.filter is None:
            return [Outcome(o.replica, "collected") for o in observations], self._initialise(entry)
        filt = entry.filter
        self._fill_rows(entry, seen, filt.x)
        entry.condition = self._window_condition(entry)
        if entry.condition > self.settings.max_condition:  # the rows may be stale: judge at the estimate
            self._fill_rows(entry, entry.window, filt.x)
            entry.condition = self._window_condition(entry)
        entry.identifiable = entry.condition <= self.settings.max_condition
        if entry.condition > self.settings.hold_condition:
            reason = f"held: the recent observations do not identify the parameters (condition {entry.condition:.3g})"
            return [Outcome(o.replica, "held", reason=reason) for o in observations], [reason]
        filt.predict()
        gate = entry.warmup_left == 0
        steps = [filt.update(o, gate=gate) for o in observations]
        accepted = sum(s.accepted for s in steps)
        entry.count(updates=accepted, rejected=len(steps) - accepted)
        outcomes = [_outcome(o, s) for o, s in zip(observations, steps, strict=True)]
        notes = []
        if entry.warmup_left:
            entry.warmup_left -= 1
            entry.phase = "warmup" if entry.warmup_left else "tracking"
        consistent = [s.nis for s in steps if s.accepted and s.nis is not None]
        if consistent and (mean := float(np.mean(consistent))) > DIM_Z:
            filt.inflate(min(mean / DIM_Z, self.settings.fading_limit))
            notes.append(f"covariance inflated: mean NIS {mean:.3g} > {DIM_Z}")
        all_nis = [s.nis for s in steps if s.nis is not None]
        if all_nis and float(np.median(all_nis)) >= self.settings.shift_nis:
            entry.streak += 1
            entry.suspect.extend(observations)
        else:
            entry.streak, entry.suspect = 0, []
        if entry.streak >= self.settings.refit_after:
            notes += self._refit(entry)
        return outcomes, notes

    def _initialise(self, entry: _Entry) -> list[str]:
        """Fit the collected observations; start the filter when the fit is adopted."""
        needed = self.settings.fit_min_observations
        observations = [s.obs for s in entry.window]
        if len(observations) < needed:
            return [f"collecting: {len(observations)} of {needed} observations for the first fit"]
        if entry.last_fit is not None:  # an earlier fit failed: skip the fit while the data are rank-deficient
            condition = self._condition(entry, entry.last_fit, observations)
            if condition > self.settings.hold_condition:
                entry.condition, entry.identifiable = condition, False
                return [self._unidentified(entry)]
        points = frozenset(_operating_point(o) for o in observations)
        if entry.fit_wait > 0 and points <= entry.fit_points:  # a fit costs up to a second: after failures,
            entry.fit_wait -= 1  # retry with a back-off unless the window has reached new operating points
            waiting = f"the last {entry.failed_fits} fit(s) were not adopted; the next in {entry.fit_wait + 1} cycle(s)"
            return [f"{self._unidentified(entry)}; {waiting}" if entry.identifiable is False else waiting]
        result = self._fit(entry, observations, self._seed_vector(entry))
        entry.condition, entry.identifiable = result.condition, result.identifiable
        if not result.identifiable or result.rms > self.settings.error_level:
            entry.failed_fits += 1
            entry.fit_wait = min(2 ** (entry.failed_fits - 1), MAX_FIT_WAIT) - 1
            entry.fit_points = points
        if not result.identifiable:
            return [self._unidentified(entry)]
        if result.rms > self.settings.error_level:
            return [f"fit not adopted: rms relative error {result.rms:.1%} > {self.settings.error_level:.0%}"]
        entry.failed_fits = 0
        self._start(entry, result)
        return [f"fitted on {len(observations)} observations: rms relative error {result.rms:.1%}"]

    def _refit(self, entry: _Entry) -> list[str]:
        """Refit on the observations of the streak; restart the filter there when the fit explains them.

        The fit starts at the running estimate and is pulled towards it, so what the new observations do
        not determine stays as it was: identifiability is not asked of a refit, only that it fits.
        """
        assert entry.filter is not None
        suspect = entry.suspect[-self.settings.fit_window :]
        cycles = entry.streak
        result = self._fit(entry, suspect, entry.filter.x)
        if result.rms > self.settings.error_level:
            return [
                f"refit after {cycles} disagreeing cycles not adopted: rms relative error {result.rms:.1%} "
                f"> {self.settings.error_level:.0%}; estimates kept"
            ]
        entry.window.clear()
        entry.window.extend(_Seen(o) for o in suspect)
        self._start(entry, result)
        return [f"refitted after {cycles} disagreeing cycles: rms relative error {result.rms:.1%}"]

    def _fit(self, entry: _Entry, observations: list[Observation], start: Vector | None) -> Fit:
        """Fit at most ``fit_points`` of ``observations``, spread over their rates (a fit's cost grows with them)."""
        s = self.settings
        result = fit(
            entry.model,
            _spread(observations, s.fit_points)[0],
            start,
            max_evaluations=s.fit_max_evaluations,
            max_condition=s.max_condition,
            step=s.jacobian_step,
        )
        entry.last_fit = result.x
        return result

    def _start(self, entry: _Entry, result: Fit) -> None:
        """Start the filter at a fit (warm-up without the NIS gate)."""
        entry.filter = ParamFilter.start(entry.model, result, self.settings)
        entry.warmup_left = self.settings.warmup_cycles
        entry.phase = "warmup" if entry.warmup_left else "tracking"
        entry.streak, entry.suspect = 0, []
        entry.count(fits=1)
        self._fill_rows(entry, entry.window, result.x)

    def _unidentified(self, entry: _Entry) -> str:
        kept = "the configured parameters stay in force" if entry.seed else "no parameters yet"
        return (
            f"not identifiable: condition number {entry.condition:.3g} > {self.settings.max_condition:g} "
            f"(observations at too few operating points); {kept}"
        )

    # --- the window and its identifiability ---------------------------------------------------

    def _fill_rows(self, entry: _Entry, seen: Iterable[_Seen], x: Vector) -> None:
        """Compute the Jacobian rows of ``seen`` at ``x`` (None where the model cannot be evaluated)."""
        for item in seen:
            try:
                item.rows = elasticities(entry.model, x, [item.obs], self.settings.jacobian_step)
            except ModelError:
                item.rows = None

    def _window_condition(self, entry: _Entry) -> float:
        """Condition number of the window's Jacobian rows as they were computed."""
        rows = [s.rows for s in entry.window if s.rows is not None]
        return condition_number(np.vstack(rows)) if rows else math.inf

    def _condition(self, entry: _Entry, x: Vector, observations: Sequence[Observation]) -> float:
        try:
            return condition_number(elasticities(entry.model, x, observations, self.settings.jacobian_step))
        except ModelError:
            return math.inf

    # --- reading the estimates ---------------------------------------------------------------

    def estimates(self) -> dict[Key, dict[str, float]]:
        """Tuned parameters of every key whose filter runs."""
        return {key: e.filter.params() for key, e in self.entries.items() if e.filter is not None}

    def summary(self) -> tuple[KeyReport, ...]:
        """Where every key stands now (no outcomes: those belong to a cycle's report)."""
        return tuple(self._report(self.entries[key], (), ()) for key in sorted(self.entries))

    def _report(self, entry: _Entry, outcomes: Sequence[Outcome], notes: Sequence[str]) -> KeyReport:
        configured = dict(entry.seed.params) if entry.seed else None
        tuned = entry.filter.params() if entry.filter is not None else None
        return KeyReport(
            model=entry.key[0],
            accelerator=entry.key[1],
            phase=entry.phase,
            params=tuned or configured,
            configured=configured,
            tuned=tuned is not None,
            identifiable=entry.identifiable,
            condition=entry.condition,
            outcomes=tuple(outcomes),
            counters=entry.counters,
            notes=tuple(notes),
        )

    def _entry(self, key: Key) -> _Entry:
        if key not in self.entries:
            seed = self.seeds.get(key)
            base = seed.params if seed else dict.fromkeys(self.param_names, 1.0)
            tokens = seed.max_batched_tokens if seed else DEFAULT_MAX_BATCHED_TOKENS
            model = make_queue_model(self.queue_model, base, max_batched_tokens=tokens)
            self.entries[key] = _Entry(key, model, seed, window=deque(maxlen=self.settings.fit_window))
        return self.entries[key]

    def _seed_vector(self, entry: _Entry) -> Vector | None:
        if entry.seed is None:
            return None
        return np.array([entry.seed.params[n] for n in self.param_names], dtype=np.float64)

    # --- persistence --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Plain JSON-ready data: version, queue model, and per key its phase, filter, window and counters."""
        return {
            "version": STATE_VERSION,
            "queue_model": self.queue_model,
            "skipped": self.skipped,
            "filters": {
                key_name(key): {
                    "model": key[0],
                    "accelerator": key[1],
                    "phase": e.phase,
                    "warmup_left": e.warmup_left,
                    "filter": e.filter.to_dict() if e.filter is not None else None,
                    "last_fit": e.last_fit.tolist() if e.last_fit is not None else None,
                    "streak": e.streak,
                    "suspect": [o.to_dict() for o in e.suspect],
                    "window": [s.obs.to_dict() for s in e.window],
                    "identifiable": e.identifiable,
                    "condition": _json_float(e.condition),
                    "counters": vars(e.counters).copy(),
                }
                for key, e in self.entries.items()
            },
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`state` data; ConfigError naming what is wrong with it."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"tuner state has version {state.get('version')!r}; this inferno reads {STATE_VERSION}")
        if state.get("queue_model") != self.queue_model:
            log.warning("tuner_state_ignored", queue_model=state.get("queue_model"), expected=self.queue_model)
            return
        try:
            filters = dict(state["filters"])
            self.skipped = int(state.get("skipped", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"tuner state: expected 'filters' and 'skipped': {exc}") from exc
        for name, data in filters.items():
            try:
                self._restore_entry(data)
            except (KeyError, TypeError, ValueError, ModelError, ConfigError) as exc:
                raise ConfigError(f"tuner state, filter {name}: {exc}") from exc

    def _restore_entry(self, data: Mapping[str, Any]) -> None:
        entry = self._entry((str(data["model"]), str(data["accelerator"])))
        entry.phase = data["phase"] if data["phase"] in ("collecting", "warmup", "tracking") else "collecting"
        entry.warmup_left = int(data["warmup_left"])
        if data["filter"] is not None:
            entry.filter = ParamFilter.from_dict(entry.model, data["filter"], self.settings)
        entry.last_fit = np.array(data["last_fit"], dtype=np.float64) if data["last_fit"] is not None else None
        entry.streak = int(data["streak"])
        entry.suspect = [Observation.from_dict(o, "tuner state") for o in data["suspect"]]
        entry.window.extend(_Seen(Observation.from_dict(o, "tuner state")) for o in data["window"])
        if entry.filter is not None:
            self._fill_rows(entry, entry.window, entry.filter.x)
        entry.identifiable = data["identifiable"]
        entry.condition = None if data["condition"] is None else float(data["condition"])
        entry.counters = Counters(**data["counters"])


def _operating_point(obs: Observation) -> tuple[int, int, int]:
    """Buckets of 10% in rate and 5% in each token mean (log scale): where the model is observed."""
    return (
        round(math.log(obs.rate_rps) / math.log(1.1)),
        round(math.log1p(obs.in_tokens) / math.log(1.05)),
        round(math.log(obs.out_tokens) / math.log(1.05)),
    )


def _spread(observations: list[Observation], most: int) -> tuple[list[Observation], list[Observation]]:
    """(used, unused): at most ``most`` observations evenly spaced over the rate order, the extremes included."""
    if len(observations) <= most:
        return observations, []
    ordered = sorted(observations, key=lambda o: (o.rate_rps, o.replica))
    picks = {round(i * (len(ordered) - 1) / (most - 1)) for i in range(most)}
    return [o for i, o in enumerate(ordered) if i in picks], [o for i, o in enumerate(ordered) if i not in picks]


def _outcome(obs: Observation, step: Step) -> Outcome:
    if step.accepted:
        return Outcome(obs.replica, "accepted", step.nis, "clipped to the bounds" if step.clipped else "")
    return Outcome(obs.replica, "rejected", step.nis, step.reason)


def _json_float(value: float | None) -> float | str | None:
    """JSON has no infinity: write it as the string 'inf'."""
    return "inf" if value is not None and math.isinf(value) else value
