"""Prometheus access: the only user of prometheus-api-client.

:class:`Prometheus` evaluates a batch of instant queries at one time under one time budget: retries
(with a short back-off) happen only while the budget lasts, so a slow or dead Prometheus costs a cycle
at most ``prometheus_timeout`` seconds. The bearer token file is re-read for every batch (service
account tokens rotate). Values come back as they are, NaN included: deciding what a NaN means is the
caller's business.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util import Retry

from inferno.config import Settings
from inferno.errors import CollectError, ConfigError, Problem

BACKOFF_S = 0.2
"""First pause between retries; it doubles with each retry."""

_STATUS = re.compile(r"HTTP Status Code (\d+)")


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value (possibly NaN or infinite)."""

    labels: dict[str, str]
    value: float


class MetricsApi(Protocol):
    """What the collector asks of a metrics backend: :class:`Prometheus`, or a stand-in evaluating its queries."""

    def query_many(self, queries: Mapping[str, str], at: float) -> dict[str, list[Sample]]:
        """Evaluate every query (name -> PromQL) at unix time ``at``; CollectError when it cannot."""
        ...


class Prometheus:
    """Instant queries against one Prometheus server."""

    def __init__(
        self,
        connection: PrometheusConnect,
        timeout: float,
        retries: int = 2,
        token_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._connection = connection
        self._timeout = timeout
        self._retries = retries
        self._token_file = token_file
        self._clock = clock
        self._sleep = sleep

    @property
    def url(self) -> str:
        """The server's base URL."""
        return str(self._connection.url)

    def query_many(self, queries: Mapping[str, str], at: float) -> dict[str, list[Sample]]:
        """Evaluate every query (name -> PromQL) at unix time ``at``.

        CollectError when Prometheus cannot answer them all within the time budget; ConfigError when it
        rejects a query as invalid (a bad template or metric name).
        """
        self._connection.headers = self._auth_headers()
        deadline = self._clock() + self._timeout
        return {name: self._query(name, promql, at, deadline) for name, promql in queries.items()}

    def _auth_headers(self) -> dict[str, str] | None:
        if self._token_file is None:
            return None
        try:
            with open(self._token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise CollectError(f"cannot read the Prometheus token file {self._token_file}: {exc}") from exc
        return {"Authorization": f"Bearer {token}"}

    def _query(self, name: str, promql: str, at: float, deadline: float) -> list[Sample]:
        pause = BACKOFF_S
        error = "no answer yet"
        for attempt in range(self._retries + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise CollectError(
                    f"Prometheus at {self.url} did not answer within {self._timeout:g} s ({name} query: {error})"
                )
            try:
                result = self._connection.custom_query(promql, params={"time": f"{at:.3f}"}, timeout=remaining)
                return _samples(name, result)
            except PrometheusApiClientException as exc:
                match = _STATUS.search(str(exc))
                if match and match.group(1) in ("400", "422"):
                    raise ConfigError([Problem("prometheus", f"{name} query", f"rejected: {promql!r}: {exc}")]) from exc
                error = f"HTTP {match.group(1)}" if match else str(exc)
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
            if attempt < self._retries:
                self._sleep(max(0.0, min(pause, deadline - self._clock())))
                pause *= 2
        raise CollectError(f"Prometheus at {self.url} failed the {name} query {self._retries + 1} times: {error}")


def _samples(name: str, result: object) -> list[Sample]:
    """Samples of an instant-vector result; CollectError on any other shape."""
    try:
        if not isinstance(result, list):
            raise TypeError("not a list")
        return [Sample({str(k): str(v) for k, v in r["metric"].items()}, float(r["value"][1])) for r in result]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CollectError(f"the {name} query did not return an instant vector: {str(result)[:200]}") from exc


def connect(settings: Settings) -> Prometheus | None:
    """A Prometheus client for ``settings``; None when no URL is set."""
    if not settings.prometheus_url:
        return None
    session = requests.Session()
    if settings.prometheus_ca_file is not None:
        session.verify = str(settings.prometheus_ca_file)
    else:
        session.verify = settings.prometheus_tls_verify
    connection = PrometheusConnect(url=settings.prometheus_url.rstrip("/"), session=session, retry=Retry(0, read=False))
    token_file = str(settings.prometheus_token_file) if settings.prometheus_token_file else None
    return Prometheus(connection, settings.prometheus_timeout, settings.prometheus_retries, token_file)
