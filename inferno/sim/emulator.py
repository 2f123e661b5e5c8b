"""An emulated vLLM server: OpenAI-compatible endpoints whose timing comes from the replica simulator.

An :class:`EmulatedPod` is one vLLM replica: a :class:`~inferno.sim.replica.Replica` (continuous
batching, chunked prefill, ``max_num_seqs``, an unbounded waiting queue) driven in real time, or
``time_scale`` times faster. A request is submitted to the replica when it arrives; the pod's engine task
wakes when the simulator says something happens next (a first token, a finish, an iteration to
schedule; :meth:`Replica.next_event_ms`) and, while responses stream, every ``tick_s`` to flush the
tokens generated so far. First and last tokens are therefore sent on time, and tokens in between go
out in small groups (one SSE event per token). A late wake-up (a busy machine) delays the bytes, never
the emulated times: the metrics come from the simulator's own record of each request.

An :class:`EmulatedService` serves one or more pods behind one endpoint (like a Kubernetes Service with
a load-aware gateway: each request goes to the ready pod with the fewest requests in flight, ties in
turn), and exposes ``/metrics`` for all of them (each pod's series carry its
extra labels, e.g. ``namespace`` and ``pod``). Endpoints: ``POST /v1/completions``,
``POST /v1/chat/completions`` (``"stream": true`` for SSE), ``GET /v1/models``, ``GET /health`` (503
until a pod has started: the start-up delay) and ``GET /metrics`` (vLLM V1 names, see
:mod:`inferno.sim.vllm_metrics`).

A request's output is exactly ``max_tokens`` tokens (``max_completion_tokens`` for chat; default
:data:`DEFAULT_MAX_TOKENS`), each the word " tok"; its prompt counts one token per whitespace-separated
word (or the length of a token-id list), which ``POST /tokenize`` reports as vLLM's does. vLLM's
``stream_interval`` > 1 sends the tokens of each flush in one event; ``min_tokens``, ``ignore_eos`` and
sampling options are accepted and have no effect. Time in :class:`EngineConfig` is emulated ms; with
``time_scale`` X everything (iterations, start-up) runs X times faster on the wall clock, and the
metrics report wall-clock seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from inferno.errors import ConfigError
from inferno.sim.exposition import CONTENT_TYPE, render
from inferno.sim.replica import EngineConfig, Replica, RequestRecord
from inferno.sim.vllm_metrics import VllmMetrics

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "EmulatedPod",
    "EmulatedService",
    "EmulatorConfig",
    "EmulatorHost",
    "make_app",
    "serve_forever",
]

DEFAULT_MAX_TOKENS = 16
"""Output tokens of a request that does not say (OpenAI's default for completions)."""
TICK_S = 0.02
"""Wall-clock seconds between flushes of streamed tokens."""
TOKEN_TEXT = " tok"
KV_TOKENS_PER_SEQ = 4096
"""Default KV-cache size per ``max_num_seqs`` slot, in tokens (for the usage gauge only)."""

T = TypeVar("T")


@dataclass(frozen=True)
class EmulatorConfig:
    """What one emulated vLLM replica serves and how fast."""

    model: str
    engine: EngineConfig
    startup_s: float = 0.0
    """Emulated seconds from start until /health answers 200 (model loading)."""
    time_scale: float = 1.0
    """Run this many times faster than real time (> 0)."""
    kv_cache_tokens: int = 0
    """KV-cache size in tokens for the usage gauge; 0 = max_num_seqs x KV_TOKENS_PER_SEQ."""
    max_model_len: int = 8192
    """Longest prompt + output accepted (and the top of the token-count buckets)."""
    tick_s: float = TICK_S
    """Wall-clock seconds between flushes of streamed tokens (first and last tokens are always on time)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ConfigError(f"time_scale must be a finite number > 0 (got {self.time_scale!r})")
        if not (math.isfinite(self.startup_s) and self.startup_s >= 0):
            raise ConfigError(f"startup_s must be a finite number >= 0 (got {self.startup_s!r})")
        if not self.model:
            raise ConfigError("the model name must not be empty")
        if self.kv_cache_tokens < 0 or self.max_model_len < 2 or not self.tick_s > 0:
            raise ConfigError("kv_cache_tokens must be >= 0, max_model_len >= 2 and tick_s > 0")

    @property
    def kv_capacity(self) -> int:
        """The KV-cache size in tokens."""
        return self.kv_cache_tokens or self.engine.max_num_seqs * KV_TOKENS_PER_SEQ


class Flight:
    """A request in flight on a pod: tokens produced so far, and whether it has finished."""

    __slots__ = ("changed", "done", "in_tokens", "out_tokens", "record", "rid", "stream", "tokens")

    def __init__(self, rid: int, in_tokens: int, out_tokens: int, stream: bool) -> None:
        self.rid = rid
        self.in_tokens = in_tokens
        self.out_tokens = out_tokens
        self.stream = stream
        self.tokens = 0
        self.done = False
        self.record: RequestRecord | None = None
        self.changed = asyncio.Event()


class EmulatedPod:
    """One emulated vLLM replica; its methods run on the event loop that serves it."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        labels: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.labels = dict(labels or {})
        """Extra labels of its metric series (e.g. namespace and pod)."""
        self._clock = clock
        self._t0 = clock()
        self.ready_at = self._t0 + config.startup_s / config.time_scale
        """Wall-clock time (of ``clock``) from which it serves."""
        self._ms_per_s = 1000.0 * config.time_scale
        self.replica = Replica(config.engine)
        self.metrics = VllmMetrics(config.model, time_scale=config.time_scale, max_model_len=config.max_model_len)
        self._flights: dict[int, Flight] = {}
        self._streams = 0
        self._kick: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.terminating = False
        """Retired: takes no new requests, finishes those it has."""
        self.on_drained: Callable[[EmulatedPod], None] | None = None

    @property
    def in_flight(self) -> int:
        """Requests submitted and not finished."""
        return len(self._flights)

    def ready(self, now: float | None = None) -> bool:
        """Whether the start-up delay has passed."""
        return (self._clock() if now is None else now) >= self.ready_at

    def emulated_ms(self, now: float) -> float:
        """Emulated ms since the pod started, at wall-clock time ``now``."""
        return (now - self._t0) * self._ms_per_s

    def start(self) -> None:
        """Start the engine task (on the running event loop)."""
        self._kick = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the engine task; requests in flight are left unanswered."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, in_tokens: int, out_tokens: int, stream: bool) -> Flight:
        """Hand a request to the replica now."""
        now = self._clock()
        self.sync(now)
        rid = self.replica.submit(self.emulated_ms(now), in_tokens, out_tokens)
        if rid is None:  # pragma: no cover - the waiting queue is unbounded
            raise RuntimeError("the replica refused a request")
        flight = Flight(rid, in_tokens, out_tokens, stream)
        self._flights[rid] = flight
        self._streams += stream
        if self._kick is not None:
            self._kick.set()
        return flight

    def sync(self, now: float | None = None) -> None:
        """Advance the replica to ``now``: finish requests, publish streamed tokens, update the gauges."""
        now = self._clock() if now is None else now
        replica = self.replica
        for record in replica.advance_to(max(replica.now_ms, self.emulated_ms(now))):
            self.metrics.observe(record)
            flight = self._flights.pop(record.id, None)
            if flight is None:
                continue
            flight.tokens, flight.done, flight.record = flight.out_tokens, True, record
            self._streams -= flight.stream
            flight.changed.set()
        if self._streams:
            for flight in self._flights.values():
                if flight.stream:
                    tokens = replica.generated(flight.rid)
                    if tokens > flight.tokens:
                        flight.tokens = tokens
                        flight.changed.set()
        m = self.metrics
        m.running, m.waiting = replica.num_running, replica.num_waiting
        m.kv_cache_usage = min(1.0, replica.kv_cache_tokens / self.config.kv_capacity)
        m.prompt_tokens, m.generation_tokens = replica.prompt_tokens, replica.generation_tokens
        if self.terminating and not self._flights and self.on_drained is not None:
            callback, self.on_drained = self.on_drained, None
            callback(self)

    async def _run(self) -> None:
        assert self._kick is not None
        kick = self._kick
        while True:
            kick.clear()
            now = self._clock()
            self.sync(now)
            wake = self._t0 + self.replica.next_event_ms() / self._ms_per_s + 1e-6
            if self._streams:
                wake = min(wake, now + self.config.tick_s)
            delay = wake - self._clock()
            if delay <= 0:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(kick.wait(), None if math.isinf(delay) else delay)


class EmulatedService:
    """Pods of one model behind one endpoint, routing each request to the least busy ready pod."""

    def __init__(self, model: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.pods: list[EmulatedPod] = []
        self._clock = clock
        self._turn = itertools.count()
        self.max_model_len = 8192
        self.created = int(time.time())

    def add(self, pod: EmulatedPod) -> None:
        """Serve ``pod`` (on the running event loop); it takes requests once its start-up delay has passed."""
        if pod.config.model != self.model:
            raise ValueError(f"pod serves {pod.config.model!r}, the service {self.model!r}")
        self.max_model_len = pod.config.max_model_len
        self.pods.append(pod)
        pod.start()

    def retire(self, pod: EmulatedPod) -> None:
        """Stop routing to ``pod``; it leaves (and its metrics with it) once its requests have finished."""
        pod.terminating = True

        def drained(p: EmulatedPod) -> None:
            if p in self.pods:
                self.pods.remove(p)
            asyncio.get_running_loop().create_task(p.stop())

        pod.on_drained = drained
        pod.sync()

    def ready(self) -> bool:
        """Whether some pod takes requests."""
        now = self._clock()
        return any(p.ready(now) and not p.terminating for p in self.pods)

    def pick(self) -> EmulatedPod | None:
        """The ready pod with the fewest requests in flight (ties in turn); None when none is ready."""
        now = self._clock()
        ready = [p for p in self.pods if p.ready(now) and not p.terminating]
        if not ready:
            return None
        fewest = min(p.in_flight for p in ready)
        least = [p for p in ready if p.in_flight == fewest]
        return least[next(self._turn) % len(least)]

    def exposition(self) -> str:
        """The /metrics text of every pod, synced to now."""
        now = self._clock()
        families = []
        for pod in list(self.pods):
            pod.sync(now)
            families += pod.metrics.families(pod.labels)
        return render(families)


# --- the HTTP API ---------------------------------------------------------------------------


class _RequestError(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


def _error(status: int, message: str, kind: str) -> web.Response:
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return web.json_response({"error": body, **body}, status=status)


def _words(text: object) -> int:
    if isinstance(text, str):
        return len(text.split())
    if isinstance(text, list):  # chat content parts
        return sum(_words(p.get("text", "")) for p in text if isinstance(p, dict))
    return 0


def _prompt_tokens(body: Mapping[str, Any], chat: bool) -> int:
    """Prompt tokens: words of the prompt or messages, or the length of a token-id list."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _RequestError(400, "messages must be a non-empty list")
        return max(1, sum(_words(m.get("content", "")) for m in messages if isinstance(m, dict)))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return max(1, _words(prompt))
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    raise _RequestError(400, "prompt must be a string or a list of token ids (one prompt per request)")


def _max_tokens(body: Mapping[str, Any], chat: bool) -> int:
    value = body.get("max_completion_tokens") if chat else None
    value = body.get("max_tokens") if value is None else value
    if value is None:
        return DEFAULT_MAX_TOKENS
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _RequestError(400, f"max_tokens must be an integer >= 1 (got {value!r})")
    return value


def make_app(service: EmulatedService) -> web.Application:
    """The aiohttp application of an emulated vLLM server."""

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200 if service.ready() else 503)

    async def models(_: web.Request) -> web.Response:
        model = {
            "id": service.model,
            "object": "model",
            "created": service.created,
            "owned_by": "inferno-emulator",
            "root": service.model,
            "parent": None,
            "max_model_len": service.max_model_len,
        }
        return web.json_response({"object": "list", "data": [model]})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=service.exposition().encode(), headers={"Content-Type": CONTENT_TYPE})

    async def tokenize(request: web.Request) -> web.Response:
        try:
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _RequestError(400, "the body is not valid JSON") from None
            if not isinstance(body, dict):
                raise _RequestError(400, "the body must be a JSON object")
            count = _prompt_tokens(body, chat="messages" in body)
        except _RequestError as exc:
            return _error(exc.status, str(exc), exc.kind)
        return web.json_response({"count": count, "max_model_len": service.max_model_len, "tokens": list(range(count))})

    async def completions(request: web.Request) -> web.StreamResponse:
        return await _complete(service, request, chat=False)

    async def chat(request: web.Request) -> web.StreamResponse:
        return await _complete(service, request, chat=True)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def _complete(service: EmulatedService, request: web.Request, chat: bool) -> web.StreamResponse:
    try:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _RequestError(400, "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _RequestError(400, "the body must be a JSON object")
        if body.get("model") != service.model:
            raise _RequestError(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if body.get("n", 1) != 1:
            raise _RequestError(400, "only n = 1 is supported")
        prompt, output = _prompt_tokens(body, chat), _max_tokens(body, chat)
        if prompt + output > service.max_model_len:
            raise _RequestError(400, f"prompt ({prompt}) + max_tokens ({output}) exceed {service.max_model_len} tokens")
        pod = service.pick()
        if pod is None:
            raise _RequestError(503, "no replica is ready (starting up)", "ServiceUnavailableError")
    except _RequestError as exc:
        return _error(exc.status, str(exc), exc.kind)
    stream = bool(body.get("stream", False))
    interval = body.get("stream_interval", 1)
    grouped = isinstance(interval, int) and interval > 1
    include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
    flight = pod.submit(prompt, output, stream)
    reply = _Reply(service.model, chat, prompt, output)
    if not stream:
        while not flight.done:
            await flight.changed.wait()
            flight.changed.clear()
        return web.json_response(reply.whole())
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    sent = 0
    try:
        while True:
            await flight.changed.wait()
            flight.changed.clear()
            if flight.tokens > sent:
                await response.write(reply.chunks(sent, flight.tokens, grouped))
                sent = flight.tokens
            if flight.done:
                break
        tail = reply.usage_chunk() if include_usage else b""
        await response.write(tail + b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionError:  # the client went away; the request runs on (vLLM would abort it)
        pass
    return response


class _Reply:
    """The JSON bodies of one response."""

    def __init__(self, model: str, chat: bool, prompt: int, output: int) -> None:
        self.model, self.chat, self.prompt, self.output = model, chat, prompt, output
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def _usage(self) -> dict[str, int]:
        total = self.prompt + self.output
        return {"prompt_tokens": self.prompt, "completion_tokens": self.output, "total_tokens": total}

    def whole(self) -> dict[str, Any]:
        text = TOKEN_TEXT * self.output
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        if self.chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        kind = "chat.completion" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self._usage(),
        }

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"

    def chunks(self, start: int, end: int, grouped: bool = False) -> bytes:
        """SSE events of tokens ``start`` .. ``end - 1``: one event each, or one for all when ``grouped``."""
        events = []
        for first, stop in [(start, end)] if grouped else [(i, i + 1) for i in range(start, end)]:
            text = TOKEN_TEXT * (stop - first)
            finish = "length" if stop == self.output else None
            choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
            if self.chat:
                choice["delta"] = {"role": "assistant", "content": text} if first == 0 else {"content": text}
            else:
                choice["text"] = text
            events.append(self._event([choice]))
        return b"".join(events)

    def usage_chunk(self) -> bytes:
        """The closing event with the usage and no choices (``stream_options.include_usage``)."""
        return self._event([], self._usage())


# --- running servers ------------------------------------------------------------------------


def serve_forever(config: EmulatorConfig, host: str, port: int, on_start: Callable[[], None] | None = None) -> None:
    """Serve one emulated pod on ``host:port`` until SIGINT/SIGTERM."""

    async def start(app: web.Application) -> None:
        service.add(EmulatedPod(config))
        if on_start is not None:
            on_start()

    service = EmulatedService(config.model)
    app = make_app(service)
    app.on_startup.append(start)
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True, shutdown_timeout=2.0)


class EmulatorHost:
    """An event loop in a background thread that serves emulated services (tests and the demo)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._runners: list[web.AppRunner] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="vllm-emulator", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and return its result."""

        async def run() -> T:
            return fn()

        return self.run(run())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def serve(self, service: EmulatedService, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve ``service`` over HTTP; its base URL."""

        async def start() -> str:
            runner = web.AppRunner(make_app(service), access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            self._runners.append(runner)
            sockets = runner.addresses
            return f"http://{host}:{sockets[0][1]}"

        return self.run(start())

    def close(self) -> None:
        """Stop every server and the loop (again: nothing)."""
        if self.loop.is_closed():
            return

        async def stop() -> None:
            for runner in self._runners:
                await runner.cleanup()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
