"""The Prometheus text exposition format (version 0.0.4), written and read by hand.

prometheus_client is not used to write it: its newer releases rename ``vllm:x`` to ``vllm_x`` when a
Prometheus 2.x server scrapes them, and our emulated vLLM must serve vLLM's own names. :func:`render`
writes metric families, :class:`Histogram` keeps cumulative buckets, and :func:`parse` reads samples
back (what the demo's built-in scraper uses when no Prometheus is installed).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["CONTENT_TYPE", "Family", "Histogram", "Sample", "family_name", "parse", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Sample:
    """One series of a scrape: its full name (with any _bucket/_sum/_count suffix), labels and value."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Family:
    """A metric family: its name, type (counter, gauge, histogram), help text and samples."""

    name: str
    kind: str
    help: str
    samples: Sequence[Sample] = field(default_factory=tuple)


def family_name(series: str) -> str:
    """The family of a series name: a histogram's name without _bucket, _sum or _count."""
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def format_value(value: float) -> str:
    """A sample value as the format writes it (NaN, +Inf, -Inf, or a Python float)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_labels(labels: Mapping[str, str]) -> str:
    """``{k="v",...}`` (empty when there are none)."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families``; families with the same name are merged in order."""
    merged: dict[str, tuple[Family, list[Sample]]] = {}
    for family in families:
        merged.setdefault(family.name, (family, []))[1].extend(family.samples)
    lines = []
    for family, samples in merged.values():
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        lines += [f"{s.name}{format_labels(s.labels)} {format_value(s.value)}" for s in samples]
    return "\n".join(lines) + "\n"


class Histogram:
    """Cumulative buckets, sum and count of observations, as a Prometheus histogram reports them."""

    def __init__(self, buckets: Sequence[float]) -> None:
        if list(buckets) != sorted(set(buckets)):
            raise ValueError("histogram buckets must be distinct and increasing")
        self.buckets = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value`` ``times`` times."""
        self._counts[bisect.bisect_left(self.buckets, value)] += times
        self.sum += value * times
        self.count += times

    def samples(self, name: str, labels: Mapping[str, str]) -> list[Sample]:
        """The _bucket (cumulative, ``le``), _sum and _count series."""
        out = []
        total = 0
        for bound, count in zip((*self.buckets, math.inf), self._counts, strict=True):
            total += count
            out.append(Sample(f"{name}_bucket", {**labels, "le": format_value(bound)}, float(total)))
        out.append(Sample(f"{name}_sum", labels, self.sum))
        out.append(Sample(f"{name}_count", labels, float(self.count)))
        return out


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse(text: str) -> list[Sample]:
    """The samples of an exposition text (comments and timestamps ignored); ValueError on a bad line."""
    samples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"line {number}: not a sample: {line[:200]!r}")
        name, body, value = match.group(1), match.group(2), match.group(3)
        labels: dict[str, str] = {}
        if body:
            inner, pos = body[1:-1], 0
            while pos < len(inner):
                label = _LABEL.match(inner, pos)
                if label is None:
                    raise ValueError(f"line {number}: bad labels: {body[:200]!r}")
                labels[label.group(1)] = re.sub(r"\\\\|\\\"|\\n", lambda m: _UNESCAPE[m.group(0)], label.group(2))
                pos = label.end()
        samples.append(Sample(name, labels, float(value)))
    return samples
