"""A built-in scraper: reads targets' ``/metrics`` into memory and answers the collector's queries.

The demo uses it where no ``prometheus`` binary is installed. It is a stand-in for Prometheus at the
:class:`~inferno.prometheus.MetricsApi` seam, not a PromQL engine: it evaluates the collector's default
query templates only, ``AGG by (LABELS) (FUNC(METRIC{SELECTOR}[WINDOW]))`` with AGG ``sum`` or ``avg``,
FUNC ``rate``, ``avg_over_time`` or ``deriv``, SELECTOR matchers ``=``, ``!=``, ``=~``, ``!~``, and
alternatives joined by ``or``; anything else is a ConfigError. Over the samples in the window,
``rate`` is the counter's increase (resets handled) over the time between its first and last sample,
``deriv`` the least-squares slope and ``avg_over_time`` the mean, as Prometheus computes them (without
Prometheus' extrapolation to the window's edges). Series keep the labels the targets expose
(``honor_labels``).
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from inferno.errors import ConfigError, Problem
from inferno.prometheus import Sample
from inferno.sim.exposition import Sample as Scraped
from inferno.sim.exposition import parse

__all__ = ["Scraper"]

_QUERY = re.compile(
    r"^\s*(sum|avg)\s+by\s*\(([^)]*)\)\s*\(\s*(rate|avg_over_time|deriv)\s*\(\s*"
    r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*\[\s*(\d+)(ms|s|m|h)\s*\]\s*\)\s*\)\s*$"
)
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Key = tuple[str, tuple[tuple[str, str], ...]]


def _alternatives(promql: str) -> list[str]:
    """``(a) or (b)`` -> [a, b]; a query without ``or`` is one alternative."""
    parts, depth, current, i = [], 0, "", 0
    while i < len(promql):
        if depth == 0 and promql.startswith(" or ", i):
            parts.append(current)
            current, i = "", i + 4
            continue
        depth += promql[i] == "("
        depth -= promql[i] == ")"
        current += promql[i]
        i += 1
    parts.append(current)
    cleaned = []
    for part in parts:
        part = part.strip()
        if len(parts) > 1 and part.startswith("(") and part.endswith(")"):
            part = part[1:-1]
        cleaned.append(part)
    return cleaned


class Scraper:
    """Scrapes targets every ``interval_s`` in a background thread; answers instant queries over what it kept."""

    def __init__(
        self,
        targets: Callable[[], Mapping[str, Mapping[str, str]]],
        *,
        interval_s: float = 1.0,
        retention_s: float = 900.0,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Scrape what ``targets()`` returns before each round: base URL -> labels to add where unset.

        The labels play the part of a Prometheus target's labels (e.g. namespace and pod).
        """
        self._targets = targets
        self.interval_s = interval_s
        self.retention_s = retention_s
        self._timeout = timeout_s
        self._clock = clock
        self._series: dict[Key, list[tuple[float, float]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scrapes = 0
        self.failures = 0

    def start(self) -> None:
        """Scrape in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop scraping (again: nothing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.scrape_once()
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def scrape_once(self) -> None:
        """Scrape every target now; a target that does not answer is skipped (its series go stale)."""
        for url, labels in self._targets().items():
            at = self._clock()
            try:
                with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=self._timeout) as response:
                    samples = parse(response.read().decode())
            except (OSError, ValueError):
                self.failures += 1
                continue
            self.add(at, [Scraped(s.name, {**labels, **s.labels}, s.value) for s in samples] if labels else samples)

    def add(self, at: float, samples: Sequence[Scraped]) -> None:
        """Store scraped samples taken at unix time ``at``."""
        horizon = at - self.retention_s
        with self._lock:
            self.scrapes += 1
            for s in samples:
                series = self._series.setdefault((s.name, tuple(sorted(s.labels.items()))), [])
                series.append((at, float(s.value)))
                if series[0][0] < horizon:
                    del series[: next(i for i, (t, _) in enumerate(series) if t >= horizon)]

    def query_many(self, queries: Mapping[str, str], at: float) -> dict[str, list[Sample]]:
        """Evaluate each query at unix time ``at`` (the collector's default templates only)."""
        return {name: self._query(name, promql, at) for name, promql in queries.items()}

    def _query(self, name: str, promql: str, at: float) -> list[Sample]:
        found: dict[tuple[tuple[str, str], ...], Sample] = {}
        for alternative in _alternatives(promql):
            for sample in self._evaluate(name, alternative, at):
                found.setdefault(tuple(sorted(sample.labels.items())), sample)  # "or": the left side wins
        return list(found.values())

    def _evaluate(self, name: str, promql: str, at: float) -> list[Sample]:
        match = _QUERY.match(promql)
        if match is None:
            message = f"the built-in scraper evaluates only the default query templates, not {promql!r}"
            raise ConfigError([Problem("scraper", f"{name} query", message)])
        agg, by, func, metric, selector, amount, unit = match.groups()
        window = int(amount) * _UNITS[unit]
        matchers = _matchers(selector or "", name)
        keys = [label.strip() for label in by.split(",") if label.strip()]
        groups: dict[tuple[str, ...], list[float]] = {}
        with self._lock:
            candidates = [(dict(k[1]), list(v)) for k, v in self._series.items() if k[0] == metric]
        for labels, points in candidates:
            if not all(m(labels) for m in matchers):
                continue
            inside = [(t, v) for t, v in points if at - window < t <= at]
            value = _apply(func, inside)
            if value is not None:
                groups.setdefault(tuple(labels.get(k, "") for k in keys), []).append(value)
        return [
            Sample(dict(zip(keys, group, strict=True)), sum(v) if agg == "sum" else sum(v) / len(v))
            for group, v in groups.items()
        ]


def _matchers(selector: str, name: str) -> list[Callable[[Mapping[str, str]], bool]]:
    inner = selector.strip()[1:-1] if selector else ""
    found: list[Callable[[Mapping[str, str]], bool]] = []
    pos = 0
    while pos < len(inner.strip()):
        match = _MATCHER.match(inner, pos)
        if match is None:
            raise ConfigError([Problem("scraper", f"{name} query", f"cannot read the selector {selector!r}")])
        label, op, value = match.group(1), match.group(2), match.group(3).replace('\\"', '"')
        found.append(_matcher(label, op, value))
        pos = match.end()
    return found


def _matcher(label: str, op: str, value: str) -> Callable[[Mapping[str, str]], bool]:
    if op in ("=~", "!~"):
        pattern, positive = re.compile(f"(?:{value})"), op == "=~"
        return lambda labels: bool(pattern.fullmatch(labels.get(label, ""))) == positive
    equal = op == "="
    return lambda labels: (labels.get(label, "") == value) == equal


def _apply(func: str, points: Sequence[tuple[float, float]]) -> float | None:
    """The value of ``func`` over the points of one series in the window; None when it has none."""
    if func == "avg_over_time":
        return sum(v for _, v in points) / len(points) if points else None
    if len(points) < 2:
        return None
    span = points[-1][0] - points[0][0]
    if span <= 0:
        return None
    if func == "rate":
        increase = 0.0
        for (_, before), (_, after) in itertools.pairwise(points):
            increase += after - before if after >= before else after
        return increase / span
    times = [t - points[0][0] for t, _ in points]
    values = [v for _, v in points]
    mean_t, mean_v = sum(times) / len(times), sum(values) / len(values)
    var = sum((t - mean_t) ** 2 for t in times)
    return sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / var if var > 0 else None
