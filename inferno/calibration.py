"""Calibration of a queue model against one running vLLM server: a bounded load sweep, then a fit.

For every token mix (prompt and output tokens) the server's max throughput is measured first, by sending
a burst of ``burst_per_batch * max_num_seqs`` requests at once and timing the completions while the batch
stays full. Then open-loop Poisson loads at fractions of that throughput are sent for ``step_s`` seconds
each (at most ``max_requests`` requests a step). What the server reports over each step, from the moment
its load has built up (``warmup_s``) to the last send, becomes one tuner :class:`Observation` (rate, mean
tokens, mean TTFT and ITL): read from Prometheus with the collector's query templates, or, without a
Prometheus, by differencing the counters and histogram sums of the server's own ``/metrics``. The
observations are fitted with the tuner's initial fit (:func:`inferno.tuner.fit.fit`, Nelder-Mead of the
relative errors over log-parameters), as the online tuner fits its first observations.

:func:`calibrate` returns a :class:`Calibration`; ``inferno calibrate`` prints it.
"""

from __future__ import annotations

import math
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx

from inferno.collector import build_queries
from inferno.config import Settings
from inferno.errors import CollectError, ConfigError, ModelError
from inferno.loadgen import LoadSummary, Request, RequestResult, model_name, run_load, scrape_metrics, summarize
from inferno.prometheus import Prometheus
from inferno.queueing import DEFAULT_QUEUE_MODEL, QueueModel, Targets, Workload, make_queue_model, size
from inferno.spec import DEFAULT_MAX_BATCHED_TOKENS
from inferno.tuner.fit import fit, param_names
from inferno.tuner.observation import QUEUE_PER_BATCH, Observation
from inferno.tuner.settings import TunerSettings

__all__ = [
    "Calibration",
    "MaxThroughput",
    "Measured",
    "MetricsReader",
    "Plan",
    "PrometheusReader",
    "ScrapeReader",
    "Step",
    "calibrate",
    "instance_of",
    "measure_max_throughput",
    "poisson_requests",
    "predict_at",
    "predicted_itl_rate",
    "run_step",
]


@dataclass(frozen=True)
class Plan:
    """What the sweep does; every part of it is bounded in time and request count."""

    mixes: tuple[tuple[int, int], ...] = ((128, 16), (64, 64), (16, 128))
    """(prompt tokens, output tokens) of each token mix."""
    loads: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    """Offered loads, as fractions of the mix's measured max throughput."""
    step_s: float = 15.0
    """Length of one load step (s)."""
    warmup_s: float = 3.0
    """Start of a step left out of its measurement, while the load builds up (s)."""
    max_requests: int = 600
    """Most requests of one step (the step is shortened to fit)."""
    burst_per_batch: int = 6
    """A max-throughput burst sends this many times max_num_seqs requests at once."""
    timeout_s: float = 60.0
    """A request taking longer is abandoned (and counted as an error)."""
    seed: int = 0
    """Seed of the Poisson arrivals and of the prompts."""

    def __post_init__(self) -> None:
        problems = []
        if not self.mixes or any(i < 1 or o < 2 for i, o in self.mixes):
            problems.append("every mix needs >= 1 prompt token and >= 2 output tokens")
        if not self.loads or any(not 0 < f < 1 for f in self.loads):
            problems.append("loads must be fractions of the max throughput in (0, 1)")
        if not 0 <= self.warmup_s < self.step_s:
            problems.append("warmup_s must be >= 0 and below step_s")
        if self.max_requests < 2 or self.burst_per_batch < 3:
            problems.append("max_requests must be >= 2 and burst_per_batch >= 3")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass(frozen=True)
class Measured:
    """What the server reported over one window."""

    rate_rps: float
    """Finished requests per second."""
    in_tokens: float
    """Mean prompt tokens."""
    out_tokens: float
    """Mean output tokens."""
    ttft_ms: float
    """Mean time to first token (ms)."""
    itl_ms: float
    """Mean inter-token latency (ms)."""
    source: str
    """Where it came from: 'prometheus' or 'scrape'."""


class MetricsReader(Protocol):
    """Reads what the server reported between two unix times."""

    def mark(self, at: float) -> None:
        """Called at the start of the measured part of a step (the scrape reader reads its counters then)."""
        ...

    def measure(self, start: float, end: float) -> Measured:
        """The server's figures from ``start`` to ``end`` (unix s); CollectError when they cannot be had."""
        ...


def _mean(sums: Mapping[str, float], name: str, scale: float = 1.0) -> float:
    """scale * name_sum / name_count; CollectError when nothing was counted."""
    count = sums.get(f"{name}_count", 0.0)
    if not count > 0:
        raise CollectError(f"{name}: nothing was counted in the window")
    return scale * sums[f"{name}_sum"] / count


class ScrapeReader:
    """Differences the server's own ``/metrics`` (counters and histogram sums) between two reads."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self._url = url
        self._settings = settings or Settings()
        self._start: tuple[float, dict[str, float]] | None = None

    def mark(self, at: float) -> None:
        """Read the counters now."""
        self._start = (time.time(), self._read())

    def _read(self) -> dict[str, float]:
        try:
            return scrape_metrics(self._url)
        except httpx.HTTPError as exc:
            raise CollectError(f"cannot read {self._url}/metrics: {exc}") from exc

    def measure(self, start: float, end: float) -> Measured:
        """Counters now minus those read at :meth:`mark`, over the time between the reads."""
        if self._start is None:
            raise CollectError("the counters were not read at the start of the step")
        began, before = self._start
        after, now = self._read(), time.time()
        s = self._settings

        def first(names: Sequence[str], suffix: str) -> str:
            return next((n for n in names if f"{n}{suffix}" in after), names[0])

        delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
        requests = delta.get(first(s.metric_requests, ""), 0.0)
        return Measured(
            rate_rps=requests / (now - began),
            in_tokens=_mean(delta, first(s.metric_prompt_tokens, "_sum")),
            out_tokens=_mean(delta, first(s.metric_generation_tokens, "_sum")),
            ttft_ms=_mean(delta, first(s.metric_ttft, "_sum"), 1000.0),
            itl_ms=_mean(delta, first(s.metric_itl, "_sum"), 1000.0),
            source="scrape",
        )


class PrometheusReader:
    """Asks Prometheus with the collector's query templates, per (job, instance) of the scraped server."""

    def __init__(
        self,
        prometheus: Prometheus,
        instance: str,
        settings: Settings | None = None,
        settle_s: float = 2.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._prometheus = prometheus
        self._instance = instance
        self._settings = settings or Settings()
        self._settle_s = settle_s
        self._sleep = sleep

    def mark(self, at: float) -> None:
        """Nothing to do: Prometheus keeps the history."""

    def measure(self, start: float, end: float) -> Measured:
        """Rates and means over [start, end], once Prometheus has scraped past ``end``."""
        self._sleep(max(0.0, end + self._settle_s - time.time()))
        window = f"{max(1, round(1000 * (end - start)))}ms"
        settings = self._settings.model_copy(
            update={"metrics_window": window, "namespace_label": "job", "pod_label": "instance", "namespaces": ()}
        )
        wanted = {"requests"} | {f"{q}_{p}" for q in ("in", "out", "ttft", "itl") for p in ("sum", "count")}
        queries = {k: v for k, v in build_queries(settings).items() if k in wanted}
        found = self._prometheus.query_many(queries, end)
        values: dict[str, float] = {}
        for name, samples in found.items():
            mine = [s.value for s in samples if s.labels.get("instance") == self._instance]
            if not mine:
                seen = sorted({s.labels.get("instance", "?") for s in samples})
                raise CollectError(
                    f"Prometheus has no {name} series of instance {self._instance!r}; "
                    f"it has: {', '.join(seen) or 'none'}"
                )
            values[name] = math.fsum(mine)
        return Measured(
            rate_rps=values["requests"],
            in_tokens=_mean(values, "in"),
            out_tokens=_mean(values, "out"),
            ttft_ms=_mean(values, "ttft", 1000.0),
            itl_ms=_mean(values, "itl", 1000.0),
            source="prometheus",
        )


def instance_of(url: str) -> str:
    """host:port of a server URL: the ``instance`` label Prometheus gives a target scraped at that address."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def poisson_requests(rate_rps: float, duration_s: float, mix: tuple[int, int], seed: int) -> list[Request]:
    """Poisson arrivals at ``rate_rps`` for ``duration_s`` seconds, every request of token mix ``mix``."""
    rng = random.Random(seed)
    requests, at = [], rng.expovariate(rate_rps)
    while at < duration_s:
        requests.append(Request(at, mix[0], mix[1]))
        at += rng.expovariate(rate_rps)
    return requests


@dataclass(frozen=True)
class MaxThroughput:
    """The measured saturated throughput of one token mix."""

    in_tokens: int
    out_tokens: int
    rate_rps: float
    """Completions per second while the batch stayed full."""
    requests: int
    errors: int


def measure_max_throughput(
    url: str, model: str, mix: tuple[int, int], max_num_seqs: int, plan: Plan, seed: int
) -> MaxThroughput:
    """Send ``burst_per_batch * N`` requests at once; the rate of completions between the N-th and the last N."""
    count = plan.burst_per_batch * max_num_seqs
    burst = [Request(0.0, mix[0], mix[1]) for _ in range(count)]
    results = run_load(
        url, model, burst, timeout_s=plan.timeout_s, max_in_flight=count, seed=seed, stream_interval=mix[1]
    )
    ends = sorted(r.finished_at for r in results if r.finished_at is not None)
    errors = count - len(ends)
    first, last = max_num_seqs - 1, len(ends) - max_num_seqs - 1
    if last <= first or ends[last] <= ends[first]:
        raise CollectError(f"the burst of {count} requests at mix {mix} gave too few completions ({len(ends)})")
    return MaxThroughput(mix[0], mix[1], (last - first) / (ends[last] - ends[first]), count, errors)


@dataclass(frozen=True)
class Step:
    """One load step: what was sent, what the client saw and what the server reported."""

    mix: tuple[int, int]
    load: float
    """Planned load as a fraction of the mix's max throughput."""
    planned_rps: float
    client: LoadSummary
    """Client-side figures of the requests that finished in the measured window."""
    measured: Measured
    window: tuple[float, float]
    """Unix times (s) of the measured window."""


def run_step(
    url: str,
    model: str,
    requests: Sequence[Request],
    reader: MetricsReader,
    *,
    warmup_s: float,
    timeout_s: float,
    seed: int,
    stream_interval: int,
) -> tuple[list[RequestResult], Measured, tuple[float, float]]:
    """Send ``requests`` open-loop; the server's figures from ``warmup_s`` after the start to the last send."""
    began = time.time()
    marked = threading.Event()

    def mark() -> None:
        reader.mark(began + warmup_s)
        marked.set()

    timer = threading.Timer(warmup_s, mark)
    timer.start()
    try:
        results = run_load(url, model, requests, timeout_s=timeout_s, seed=seed, stream_interval=stream_interval)
    finally:
        timer.cancel()
    if not marked.wait(timeout_s):
        raise CollectError("the step ended before its warm-up did")
    last_send = max(r.sent_at for r in results)
    window = (began + warmup_s, last_send)
    return results, reader.measure(*window), window


@dataclass(frozen=True)
class Calibration:
    """Fitted queue-model parameters, the observations they were fitted to, and how well they fit."""

    url: str
    model: str
    accelerator: str
    max_num_seqs: int
    queue_model: str
    max_batched_tokens: int
    params: dict[str, float]
    rms: float
    """Root mean square of the relative errors of the fit (TTFT and ITL of every observation)."""
    condition: float
    identifiable: bool
    max_throughput: tuple[MaxThroughput, ...]
    steps: tuple[Step, ...]
    observations: tuple[Observation, ...]
    duration_s: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def queue(self) -> QueueModel:
        """The queue model with the fitted parameters."""
        return make_queue_model(self.queue_model, self.params, max_batched_tokens=self.max_batched_tokens)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: parameters, fit quality, max throughputs, and every observation with its errors."""
        model = self.queue()
        q = QUEUE_PER_BATCH * self.max_num_seqs
        observations = []
        for step, obs in zip(self.steps, self.observations, strict=True):
            predicted = model.analyze(obs.rate_rps, obs.workload, obs.max_batch, obs.max_queue)
            observations.append(
                {
                    "mix": list(step.mix),
                    "load": step.load,
                    "planned_rps": step.planned_rps,
                    "observation": obs.to_dict(),
                    "predicted": {"ttft_ms": predicted.ttft_ms, "itl_ms": predicted.itl_ms},
                    "errors": {
                        "ttft": predicted.ttft_ms / obs.ttft_ms - 1,
                        "itl": predicted.itl_ms / obs.itl_ms - 1,
                    },
                    "client": step.client.to_dict(),
                    "source": step.measured.source,
                    "window": list(step.window),
                }
            )
        throughputs = []
        for m in self.max_throughput:
            predicted_max = model.max_rate_rps(Workload(m.in_tokens, m.out_tokens), self.max_num_seqs, q)
            throughputs.append(asdict(m) | {"predicted_rps": predicted_max, "error": predicted_max / m.rate_rps - 1})
        return {
            "url": self.url,
            "model": self.model,
            "accelerator": self.accelerator,
            "max_num_seqs": self.max_num_seqs,
            "queue_model": self.queue_model,
            "max_batched_tokens": self.max_batched_tokens,
            "params": self.params,
            "fit": {
                "rms": self.rms,
                "condition": self.condition,
                "identifiable": self.identifiable,
                "ttft_mape": _mape(observations, "ttft"),
                "itl_mape": _mape(observations, "itl"),
            },
            "max_throughput": throughputs,
            "observations": observations,
            "perf": {
                "name": self.model,
                "acc": self.accelerator,
                "accCount": 1,
                "maxBatchSize": self.max_num_seqs,
                "atTokens": self.max_throughput[0].out_tokens if self.max_throughput else 1,
                "maxNumBatchedTokens": self.max_batched_tokens,
                "perfParms": self.params,
            },
            "duration_s": self.duration_s,
            "notes": list(self.notes),
        }


def _mape(observations: Sequence[Mapping[str, Any]], key: str) -> float:
    errors = [abs(o["errors"][key]) for o in observations]
    return math.fsum(errors) / len(errors) if errors else math.nan


def calibrate(
    url: str,
    model: str | None,
    max_num_seqs: int,
    reader: MetricsReader,
    plan: Plan | None = None,
    *,
    accelerator: str = "cpu",
    queue_model: str = DEFAULT_QUEUE_MODEL,
    max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS,
    tuner: TunerSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Measure the server at ``url`` (serving ``model`` with ``--max-num-seqs`` = ``max_num_seqs``) and fit.

    ``model`` None asks the server for its first model. ConfigError for a bad plan or an unknown queue
    model; CollectError when the server or Prometheus cannot be read; ModelError when no parameters
    explain the observations.
    """
    plan = plan or Plan()
    tuner = tuner or TunerSettings()
    names = param_names(queue_model)
    if max_num_seqs < 1:
        raise ConfigError("max_num_seqs must be >= 1")
    say = progress or (lambda _: None)
    began = time.time()
    if model is None:
        try:
            model = model_name(url)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise CollectError(f"cannot tell the model served at {url}: {exc}") from exc
    maxima, steps, observations = [], [], []
    for m, mix in enumerate(plan.mixes):
        best = measure_max_throughput(url, model, mix, max_num_seqs, plan, plan.seed + 7919 * m)
        maxima.append(best)
        say(f"mix {mix[0]}/{mix[1]} tokens: max throughput {best.rate_rps:.3g} req/s")
        for k, load in enumerate(plan.loads):
            rate = load * best.rate_rps
            duration = min(plan.step_s, plan.max_requests / rate)
            seed = plan.seed + 104729 * m + 31 * k + 1
            requests = poisson_requests(rate, duration, mix, seed)
            warmup = min(plan.warmup_s, 0.2 * duration)
            results, measured, window = run_step(
                url,
                model,
                requests,
                reader,
                warmup_s=warmup,
                timeout_s=plan.timeout_s,
                seed=seed,
                stream_interval=mix[1],
            )
            client = summarize(results, *window)
            steps.append(Step(mix, load, rate, client, measured, window))
            observations.append(
                Observation(
                    model=model,
                    accelerator=accelerator,
                    rate_rps=measured.rate_rps,
                    in_tokens=measured.in_tokens,
                    out_tokens=measured.out_tokens,
                    max_batch=max_num_seqs,
                    max_queue=QUEUE_PER_BATCH * max_num_seqs,
                    ttft_ms=measured.ttft_ms,
                    itl_ms=measured.itl_ms,
                    replica=url,
                    timestamp=window[1],
                )
            )
            say(
                f"  load {load:.0%}: {measured.rate_rps:.3g} req/s, TTFT {measured.ttft_ms:.3g} ms, "
                f"ITL {measured.itl_ms:.3g} ms ({sum(not r.ok for r in results)} errors)"
            )
    usable = [o for o in observations if o.problem() is None]
    notes = [f"{o.replica} at {o.rate_rps:.3g} req/s: {o.problem()}" for o in observations if o.problem()]
    if not usable:
        raise ModelError("no usable observation: " + "; ".join(notes))
    queue = make_queue_model(queue_model, dict.fromkeys(names, 1.0), max_batched_tokens=max_batched_tokens)
    result = fit(
        queue,
        usable,
        None,
        max_evaluations=tuner.fit_max_evaluations,
        max_condition=tuner.max_condition,
        step=tuner.jacobian_step,
    )
    if not math.isfinite(result.rms):
        raise ModelError(f"queue model {queue_model!r} could not be fitted to the {len(usable)} observations")
    if not result.identifiable:
        notes.append(
            f"the parameters are weakly determined (condition number {result.condition:.3g} > "
            f"{tuner.max_condition:g}): add token mixes or loads"
        )
    params = {n: float(v) for n, v in zip(names, result.x, strict=True)}
    return Calibration(
        url=url,
        model=model,
        accelerator=accelerator,
        max_num_seqs=max_num_seqs,
        queue_model=queue_model,
        max_batched_tokens=max_batched_tokens,
        params=params,
        rms=result.rms,
        condition=result.condition,
        identifiable=result.identifiable,
        max_throughput=tuple(maxima),
        steps=tuple(steps),
        observations=tuple(observations),
        duration_s=time.time() - began,
        notes=tuple(notes),
    )


def predicted_itl_rate(calibration: Calibration, mix: tuple[int, int], itl_target_ms: float) -> float:
    """The max rate (req/s) the fitted model gives for a mean-ITL target at token mix ``mix``."""
    n = calibration.max_num_seqs
    sized = size(calibration.queue(), Workload(*mix), Targets(itl_ms=itl_target_ms), n, QUEUE_PER_BATCH * n)
    return sized.rate_rps


def predict_at(calibration: Calibration, rate_rps: float, mix: tuple[float, float]) -> tuple[float, float]:
    """The fitted model's mean (TTFT, ITL) in ms at ``rate_rps`` and mean token lengths ``mix``."""
    n = calibration.max_num_seqs
    metrics = calibration.queue().analyze(rate_rps, Workload(*mix), n, QUEUE_PER_BATCH * n)
    return metrics.ttft_ms, metrics.itl_ms
