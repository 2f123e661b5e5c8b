"""Timestamped observations per series, resampled onto a regular grid, bounded, and JSON-persistable.

A series is one quantity of one server (its request rate, its mean input tokens, its mean output tokens),
named by a string key such as ``"chat-premium/rate"`` (:func:`series_key`). Observations arrive at
irregular times (cycles start late, collections fail, Prometheus range queries have their own step);
each is put in the grid slot ``round(t / interval_s)``. Several observations in one slot are averaged;
slots between two observed ones are filled by linear interpolation when the samples are read. A series
keeps at most ``max_samples`` slots: older ones fall out, and a gap longer than that starts it afresh.

NaN, infinite and negative observations never reach the maths: they are skipped and counted per series
(:meth:`History.rejected`), as are observations older than the window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from inferno.config import PredictorSettings
from inferno.errors import ConfigError, Problem

if TYPE_CHECKING:
    from inferno.predictor.forecast import Forecast, Predictor

HISTORY_VERSION = 1
"""Version of the :meth:`History.to_dict` layout."""

QUANTITIES = ("rate", "in_tokens", "out_tokens")
"""The series kept per server: request rate and the mean input and output tokens per request."""


def series_key(server: str, quantity: str) -> str:
    """The key of one quantity of one server, e.g. ``chat-premium/rate``."""
    return f"{server}/{quantity}"


@dataclass(frozen=True)
class Samples:
    """A series on its regular grid, ready for a predictor."""

    values: npt.NDArray[np.float64]
    """One value per slot, oldest first; finite and >= 0 (gaps interpolated)."""
    interval_s: float
    """Seconds between two slots."""
    end_s: float
    """Time of the last slot (that of the latest observation, rounded to the grid)."""
    observed: int
    """Slots holding at least one observation (the others are interpolated)."""

    def __len__(self) -> int:
        return int(self.values.size)


@dataclass
class _Series:
    """One series: the grid slot of its first value, the slot values (NaN = no observation) and counts."""

    start: int = 0
    values: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    rejected: int = 0

    @property
    def end(self) -> int:
        return self.start + len(self.values) - 1


class History:
    """Observations of many series on one grid of ``interval_s`` seconds, at most ``max_samples`` slots each."""

    def __init__(self, interval_s: float, max_samples: int) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ConfigError(f"history interval must be a positive number of seconds, not {interval_s!r}")
        if max_samples < 1:
            raise ConfigError(f"history length must be at least one sample, not {max_samples!r}")
        self.interval_s = float(interval_s)
        self.max_samples = int(max_samples)
        self._series: dict[str, _Series] = {}

    @classmethod
    def from_settings(cls, settings: PredictorSettings, interval_s: float) -> History:
        """A history on the grid ``interval_s`` (the control period) keeping ``settings.history_s`` seconds."""
        return cls(interval_s, max(1, math.ceil(settings.history_s / interval_s - 1e-9)))

    def keys(self) -> list[str]:
        """The series keys, sorted."""
        return sorted(self._series)

    def rejected(self, key: str) -> int:
        """Observations of ``key`` skipped: NaN, infinite, negative, or older than the window."""
        series = self._series.get(key)
        return series.rejected if series else 0

    def drop(self, key: str) -> None:
        """Forget series ``key`` (a server that went away)."""
        self._series.pop(key, None)

    def add(self, key: str, t: float, value: float) -> bool:
        """Record ``value`` observed at time ``t`` (s); False when it was skipped (and counted)."""
        series = self._series.setdefault(key, _Series())
        if not (math.isfinite(t) and math.isfinite(value) and value >= 0):
            series.rejected += 1
            return False
        slot = round(t / self.interval_s)
        if not series.values:
            series.start, series.values, series.counts = slot, [float(value)], [1]
        elif slot > series.end:
            if slot - series.end >= self.max_samples:
                series.start, series.values, series.counts = slot, [float(value)], [1]
            else:
                gap = slot - series.end - 1
                series.values += [math.nan] * gap + [float(value)]
                series.counts += [0] * gap + [1]
                self._trim(series)
        elif slot >= series.start:
            self._merge(series, slot - series.start, value)
        elif series.end - slot < self.max_samples:
            gap = series.start - slot - 1
            series.values[:0] = [float(value)] + [math.nan] * gap
            series.counts[:0] = [1] + [0] * gap
            series.start = slot
        else:
            series.rejected += 1
            return False
        return True

    def seed(self, key: str, times: Iterable[float], values: Iterable[float]) -> int:
        """Add a range of observations (e.g. a Prometheus range query at start-up); returns how many were kept."""
        pairs = sorted(zip(times, values, strict=True), key=lambda p: p[0] if math.isfinite(p[0]) else -math.inf)
        return sum(self.add(key, t, v) for t, v in pairs)

    def samples(self, key: str) -> Samples | None:
        """Series ``key`` on its grid, gaps filled by linear interpolation; None when it has no observation."""
        series = self._series.get(key)
        if series is None or not series.values:
            return None
        raw = np.asarray(series.values, dtype=np.float64)
        seen = np.isfinite(raw)
        if not seen.all():
            index = np.arange(raw.size)
            raw = np.interp(index, index[seen], raw[seen])
        return Samples(raw, self.interval_s, series.end * self.interval_s, int(seen.sum()))

    def forecast(self, key: str, predictor: Predictor, horizon_s: float, now_s: float | None = None) -> Forecast | None:
        """``predictor``'s forecast of series ``key`` ``horizon_s`` after ``now_s`` (default: its last sample).

        When ``now_s`` is later than the last sample (collections failed), the gap is added to the horizon.
        None when the series has no observation.
        """
        samples = self.samples(key)
        if samples is None:
            return None
        if now_s is not None and math.isfinite(now_s):
            horizon_s += max(0.0, now_s - samples.end_s)
        return predictor.forecast(samples, horizon_s)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (slots without an observation are null); :meth:`from_dict` reads it back."""
        return {
            "version": HISTORY_VERSION,
            "interval_s": self.interval_s,
            "max_samples": self.max_samples,
            "series": {
                key: {
                    "start": s.start,
                    "values": [v if math.isfinite(v) else None for v in s.values],
                    "counts": list(s.counts),
                    "rejected": s.rejected,
                }
                for key, s in sorted(self._series.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """The history saved by :meth:`to_dict`; ConfigError naming the field when the data are malformed."""
        where = "predictor history"
        if data.get("version") != HISTORY_VERSION:
            raise ConfigError([Problem(where, "version", f"expected {HISTORY_VERSION}, got {data.get('version')!r}")])
        try:
            history = cls(float(data["interval_s"]), int(data["max_samples"]))
            for key, raw in dict(data["series"]).items():
                values = [math.nan if v is None else float(v) for v in raw["values"]]
                counts = [int(c) for c in raw["counts"]]
                if len(values) != len(counts) or len(values) > history.max_samples:
                    raise ValueError("values and counts differ in length or exceed max_samples")
                if any(
                    math.isfinite(v) != (c > 0) or (math.isfinite(v) and v < 0)
                    for v, c in zip(values, counts, strict=True)
                ):
                    raise ValueError("a slot's value and count disagree, or a value is negative")
                if values and not (math.isfinite(values[0]) and math.isfinite(values[-1])):
                    raise ValueError("the first and last slots must hold observations")
                history._series[str(key)] = _Series(int(raw["start"]), values, counts, int(raw.get("rejected", 0)))
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError([Problem(where, "series", f"malformed: {exc}")]) from exc
        return history

    # --- internals ------------------------------------------------------------------------------

    def _trim(self, series: _Series) -> None:
        """Drop the oldest slots beyond ``max_samples``, then any leading slot without an observation."""
        drop = max(0, len(series.values) - self.max_samples)
        while drop < len(series.values) and series.counts[drop] == 0:
            drop += 1
        if drop:
            del series.values[:drop], series.counts[:drop]
            series.start += drop

    @staticmethod
    def _merge(series: _Series, index: int, value: float) -> None:
        """Average ``value`` into slot ``index``."""
        count = series.counts[index]
        old = series.values[index] if count else 0.0
        series.values[index] = (old * count + value) / (count + 1)
        series.counts[index] = count + 1
