"""An open-loop load generator for OpenAI-compatible inference servers (vLLM, the emulator): the only user of httpx.

Give it a list of :class:`Request` (when to send, how many prompt and output tokens) and it sends each one
at its offset from the start with a streaming ``POST /v1/completions``, whatever happened to the earlier
ones: a slow server never delays later sends (open loop), so the offered load is the planned one. Each
request's time to first token, mean inter-token latency and end-to-end latency are measured here, on the
client side, from the times the streamed chunks arrive; token counts come from the server's ``usage``.

Prompts are made of common English words, different for every request (so no prefix cache can shorten a
prefill). The server's ``/tokenize`` endpoint, where it has one, tells how many tokens a word makes, and
the word count is scaled to hit ``in_tokens`` approximately; the exact count is in the result. Outputs
have the planned length: ``max_tokens`` and ``min_tokens`` are both ``out_tokens`` and ``ignore_eos`` is
set (vLLM's extensions of the OpenAI API).

    results = run_load("http://127.0.0.1:8000", "my-model", [Request(0.0, 128, 32), Request(0.5, 64, 16)])
    print(summarize(results).to_dict())

:func:`scrape_metrics` reads the server's own ``/metrics`` once, for callers without a Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "LoadSummary",
    "Request",
    "RequestResult",
    "model_name",
    "run_load",
    "run_load_async",
    "scrape_metrics",
    "summarize",
]

_WORD_LIST = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up "
    "other about out many then them these so some her would make like him into time has look two more write "
    "go see number no way could people my than first water been call who oil its now find long down day did "
    "get come made may part"
)
WORDS = tuple(_WORD_LIST.split())
"""Prompt vocabulary: words that are one token in most tokenizers (and in the tests' tiny WordLevel one)."""

PROBE_WORDS = 64
"""Words of the prompt whose token count, with that of one word, gives tokens per word and the fixed overhead."""


@dataclass(frozen=True)
class Request:
    """One planned request: when to send it and how long its prompt and output are."""

    at_s: float
    """Offset from the start of the run (s) at which it is sent."""
    in_tokens: int
    """Prompt length (tokens), hit approximately."""
    out_tokens: int
    """Output length (tokens), exact on servers that honour min_tokens and ignore_eos."""


@dataclass(frozen=True)
class RequestResult:
    """What happened to one request, measured on the client."""

    request: Request
    """The planned request."""
    sent_at: float
    """Unix time (s) at which it was sent (or dropped)."""
    ttft_s: float | None
    """Time from sending to the first streamed token (s); None when none came."""
    itl_s: float | None
    """Mean time between its streamed tokens (s): (last - first) / (tokens - 1); None with fewer than 2."""
    e2e_s: float | None
    """Time from sending to the end of the response (s); None when it failed."""
    prompt_tokens: int
    """Prompt tokens as the server counted them (0 when unknown)."""
    generated_tokens: int
    """Output tokens as the server counted them (streamed chunks when it did not say)."""
    error: str | None = None
    """Why it failed (HTTP status, timeout, dropped at max_in_flight, ...); None when it succeeded."""

    @property
    def ok(self) -> bool:
        """It completed and produced at least one token."""
        return self.error is None and self.e2e_s is not None

    @property
    def finished_at(self) -> float | None:
        """Unix time (s) at which the response ended; None when it failed."""
        return None if self.e2e_s is None else self.sent_at + self.e2e_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (linear interpolation between order statistics); None without values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return float(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1])


@dataclass(frozen=True)
class LoadSummary:
    """Means and percentiles of a run (or of the requests that finished within a window)."""

    requests: int
    """Requests counted (sent within the run, or finished within the window)."""
    ok: int
    """Those that succeeded."""
    errors: int
    """Those that failed or were dropped."""
    span_s: float
    """The window (s), or from the first send to the last finish."""
    rate_rps: float
    """Offered rate (req/s): requests sent per second between the first and the last send; in a window, the
    requests that finished in it per second."""
    throughput_rps: float
    """Successful completions per second over ``span_s``."""
    in_tokens: float | None
    """Mean prompt tokens per successful request."""
    out_tokens: float | None
    """Mean output tokens per successful request."""
    ttft_ms: float | None
    """Mean time to first token (ms)."""
    itl_ms: float | None
    """Token-weighted mean inter-token latency (ms): all gaps over all tokens, as vLLM's histogram means it."""
    e2e_ms: float | None
    """Mean end-to-end latency (ms)."""
    ttft_p50_ms: float | None
    ttft_p90_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    """Median of the requests' own mean ITLs (ms)."""
    itl_p90_ms: float | None
    itl_p99_ms: float | None
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return asdict(self)


def summarize(results: Sequence[RequestResult], since: float | None = None, until: float | None = None) -> LoadSummary:
    """Means and percentiles of ``results``; with ``since``/``until`` (unix s), of those that finished between.

    In a window, ``rate_rps`` and ``throughput_rps`` are the completions in it per second of window, which
    is what a Prometheus ``rate()`` of vLLM's request counter over that window measures.
    """
    windowed = since is not None or until is not None
    if windowed:
        low, high = -math.inf if since is None else since, math.inf if until is None else until
        chosen = [r for r in results if r.finished_at is not None and low <= r.finished_at <= high]
        finished = [r.finished_at for r in chosen if r.finished_at is not None]
        first = since if since is not None else min((r.sent_at for r in chosen), default=0.0)
        last = until if until is not None else max(finished, default=first)
        span = max(last - first, 0.0)
    else:
        chosen = list(results)
        sends = sorted(r.sent_at for r in chosen)
        ends = [r.finished_at for r in chosen if r.finished_at is not None]
        span = max(max(ends, default=sends[-1] if sends else 0.0) - (sends[0] if sends else 0.0), 0.0)
    good = [r for r in chosen if r.ok]
    if windowed:
        rate = len(chosen) / span if span > 0 else 0.0
    else:
        sends = sorted(r.sent_at for r in chosen)
        rate = (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 1 and sends[-1] > sends[0] else 0.0
    ttft = [1000 * r.ttft_s for r in good if r.ttft_s is not None]
    itl = [1000 * r.itl_s for r in good if r.itl_s is not None]
    e2e = [1000 * r.e2e_s for r in good if r.e2e_s is not None]
    gaps = [r.generated_tokens - 1 for r in good if r.itl_s is not None]
    weighted = math.fsum(i * g for i, g in zip(itl, gaps, strict=True)) / sum(gaps) if sum(gaps) > 0 else None
    return LoadSummary(
        requests=len(chosen),
        ok=len(good),
        errors=len(chosen) - len(good),
        span_s=span,
        rate_rps=rate,
        throughput_rps=len(good) / span if span > 0 else 0.0,
        in_tokens=_mean([float(r.prompt_tokens) for r in good]),
        out_tokens=_mean([float(r.generated_tokens) for r in good]),
        ttft_ms=_mean(ttft),
        itl_ms=weighted,
        e2e_ms=_mean(e2e),
        ttft_p50_ms=_quantile(ttft, 0.5),
        ttft_p90_ms=_quantile(ttft, 0.9),
        ttft_p99_ms=_quantile(ttft, 0.99),
        itl_p50_ms=_quantile(itl, 0.5),
        itl_p90_ms=_quantile(itl, 0.9),
        itl_p99_ms=_quantile(itl, 0.99),
        e2e_p50_ms=_quantile(e2e, 0.5),
        e2e_p99_ms=_quantile(e2e, 0.99),
    )


@dataclass(frozen=True)
class _Tokenization:
    """tokens(words) = per_word * words + overhead, as the server's tokenizer counts them."""

    per_word: float = 1.0
    overhead: float = 0.0

    def words_for(self, tokens: int) -> int:
        return max(1, round((tokens - self.overhead) / self.per_word))


def _prompt(words: int, seed: int) -> str:
    """``words`` words drawn from WORDS by a generator seeded with ``seed``: different prompts per request."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


async def _tokenization(client: httpx.AsyncClient, url: str, model: str) -> _Tokenization:
    """Tokens per prompt word and fixed overhead from the server's ``/tokenize``; 1 and 0 where it has none."""
    counts = []
    for words in (1, PROBE_WORDS + 1):
        try:
            response = await client.post(f"{url}/tokenize", json={"model": model, "prompt": _prompt(words, words)})
            counts.append(int(response.json()["count"]) if response.status_code == 200 else -1)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            counts.append(-1)
    if min(counts) < 0 or counts[1] <= counts[0]:
        return _Tokenization()
    per_word = (counts[1] - counts[0]) / PROBE_WORDS
    return _Tokenization(per_word, counts[0] - per_word)


async def _one(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any], request: Request, sent_at: float, timeout_s: float
) -> RequestResult:
    """Send one streaming completion and time its chunks."""
    start = time.monotonic()
    first: float | None = None
    last: float | None = None
    chunks = 0
    usage: Mapping[str, Any] = {}

    def result(error: str | None) -> RequestResult:
        tokens = int(usage.get("completion_tokens") or chunks)
        ttft = None if first is None else first - start
        itl = None if first is None or last is None or tokens < 2 else (last - first) / (tokens - 1)
        e2e = time.monotonic() - start if error is None and first is not None else None
        if error is None and first is None:
            error = "no token was streamed"
        return RequestResult(request, sent_at, ttft, itl, e2e, int(usage.get("prompt_tokens") or 0), tokens, error)

    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", f"{url}/v1/completions", json=payload) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")[:200]
                    return result(f"HTTP {response.status_code}: {body}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    if any(c.get("text") for c in chunk.get("choices") or ()):
                        last = time.monotonic()
                        first = last if first is None else first
                        chunks += 1
    except TimeoutError:
        return result(f"timed out after {timeout_s:g} s")
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return result(f"{type(exc).__name__}: {exc}")
    return result(None)


def _payload(model: str, request: Request, prompt: str, stream_interval: int) -> dict[str, Any]:
    extra = {"stream_interval": stream_interval} if stream_interval > 1 else {}
    return extra | {
        "model": model,
        "prompt": prompt,
        "max_tokens": request.out_tokens,
        "min_tokens": request.out_tokens,
        "ignore_eos": True,
        "skip_special_tokens": False,
        "temperature": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def run_load_async(
    url: str,
    model: str,
    requests: Sequence[Request],
    *,
    timeout_s: float = 60.0,
    max_in_flight: int = 256,
    seed: int = 0,
    stream_interval: int = 1,
) -> list[RequestResult]:
    """:func:`run_load` as a coroutine, for callers that already run an event loop."""
    url = url.rstrip("/")
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        tokenization = await _tokenization(client, url, model)
        plan = sorted(enumerate(requests), key=lambda item: item[1].at_s)
        prompts = {i: _prompt(tokenization.words_for(r.in_tokens), seed * 1_000_003 + i) for i, r in plan}
        results: dict[int, RequestResult] = {}
        in_flight: set[asyncio.Task[RequestResult]] = set()
        tasks: dict[int, asyncio.Task[RequestResult]] = {}
        start_mono, start_wall = time.monotonic(), time.time()
        for i, request in plan:
            delay = start_mono + request.at_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at = start_wall + (time.monotonic() - start_mono)
            if len(in_flight) >= max_in_flight:
                results[i] = RequestResult(
                    request, sent_at, None, None, None, 0, 0, f"dropped: {max_in_flight} requests were in flight"
                )
                continue
            task = asyncio.create_task(
                _one(client, url, _payload(model, request, prompts[i], stream_interval), request, sent_at, timeout_s)
            )
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            tasks[i] = task
        for i, task in tasks.items():
            results[i] = await task
    return [results[i] for i in range(len(requests))]


def run_load(
    url: str,
    model: str,
    requests: Sequence[Request],
    *,
    timeout_s: float = 60.0,
    max_in_flight: int = 256,
    seed: int = 0,
    stream_interval: int = 1,
) -> list[RequestResult]:
    """Send ``requests`` to the server at ``url`` open-loop and return their results, in the order given.

    Each request goes out at ``at_s`` seconds after the start whether or not earlier ones have finished.
    One that would exceed ``max_in_flight`` open requests is not sent and is recorded as dropped (the
    load is then more than the client, or the server, can take: lower it). A request taking longer than
    ``timeout_s`` is abandoned and recorded as timed out. ``seed`` varies the prompts' words.

    ``stream_interval`` > 1 asks the server (vLLM's extension) to stream that many tokens per chunk; the
    first and the last chunk still go out at once, so TTFT and mean ITL are measured the same while the
    client and the server spend far less CPU on chunks (what matters when they share a few cores).
    """
    return asyncio.run(
        run_load_async(
            url,
            model,
            requests,
            timeout_s=timeout_s,
            max_in_flight=max_in_flight,
            seed=seed,
            stream_interval=stream_interval,
        )
    )


def model_name(url: str, timeout_s: float = 10.0) -> str:
    """The first model the server at ``url`` lists at ``/v1/models``; ValueError when it lists none."""
    response = httpx.get(f"{url.rstrip('/')}/v1/models", timeout=timeout_s)
    response.raise_for_status()
    models = response.json().get("data") or []
    if not models:
        raise ValueError(f"{url} lists no model at /v1/models")
    return str(models[0]["id"])


def scrape_metrics(url: str, timeout_s: float = 10.0) -> dict[str, float]:
    """The server's ``/metrics`` now: each sample name (``vllm:x_total``, ``vllm:y_sum``) summed over its labels.

    Histogram buckets and ``_created`` timestamps are left out. Raises httpx.HTTPError when the server
    cannot be read.
    """
    response = httpx.get(f"{url.rstrip('/')}/metrics", timeout=timeout_s)
    response.raise_for_status()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            totals[sample.name] = totals.get(sample.name, 0.0) + float(sample.value)
    return totals
