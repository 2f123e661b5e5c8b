"""A discrete-event model of one vLLM replica with continuous batching, run iteration by iteration.

Each engine iteration (one forward pass) takes alpha + beta * (tokens computed) + gamma * (KV-cache
tokens read) ms. Scheduling follows vLLM's V1 scheduler with chunked prefill: every running request
that is decoding computes one token; then requests part-way through their prompt, in admission order,
take prompt chunks from what is left of the per-iteration token budget M (``max_num_batched_tokens``);
then waiting requests are admitted first come, first served while fewer than ``max_num_seqs`` run and
budget is left. The iteration that computes a prompt's last token samples the first output token; each
later iteration adds one token, so a request of K output tokens decodes for K - 1 iterations after
its prefill. A prompt chunk reads the KV cache up to its own end; a decode step reads the prompt and
the tokens generated so far. The KV cache is taken to be large enough (no preemption).

Arrivals join the waiting queue and are considered at the start of the next iteration. Requests are
fed with ``submit`` in arrival order and time moves with ``advance_to``: the replica starts every
iteration that begins at or before that time and returns the requests that have finished by then.
Runs of iterations in which only decoding requests run and no one can be admitted are stepped in one go
(their times form an arithmetic sequence), which makes long simulations cheap. Times are in ms.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from inferno.errors import ModelError
from inferno.queueing.contract import checked_params
from inferno.spec import DEFAULT_MAX_BATCHED_TOKENS


@dataclass(frozen=True)
class EngineConfig:
    """Iteration-time parameters and scheduler limits of a simulated replica."""

    alpha: float
    """Per-iteration overhead (ms)."""
    beta: float
    """Compute time per token computed (ms)."""
    gamma: float
    """KV-cache read time per token read (ms)."""
    max_num_seqs: int
    """Max requests in the batch (vLLM ``--max-num-seqs``)."""
    max_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS
    """Max tokens computed per iteration (vLLM ``--max-num-batched-tokens``); at least max_num_seqs."""
    max_queue: int | None = None
    """Waiting requests beyond which arrivals are rejected; None (as vLLM) for no bound."""

    def __post_init__(self) -> None:
        params = {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}
        checked_params("simulator", tuple(params), params)
        if not isinstance(self.max_num_seqs, int) or self.max_num_seqs < 1:
            raise ModelError(f"max_num_seqs must be an integer >= 1 (got {self.max_num_seqs!r})")
        if not isinstance(self.max_batched_tokens, int) or self.max_batched_tokens < self.max_num_seqs:
            raise ModelError(
                f"max_batched_tokens must be an integer >= max_num_seqs ({self.max_num_seqs}) "
                f"(got {self.max_batched_tokens!r})"
            )
        if self.max_queue is not None and (not isinstance(self.max_queue, int) or self.max_queue < 0):
            raise ModelError(f"max_queue must be None or an integer >= 0 (got {self.max_queue!r})")


@dataclass(frozen=True)
class RequestRecord:
    """What happened to one finished request (times in ms)."""

    id: int
    arrival_ms: float
    scheduled_ms: float
    """Start of the iteration that took its first prompt chunk."""
    first_token_ms: float
    finish_ms: float
    in_tokens: int
    out_tokens: int

    @property
    def queue_ms(self) -> float:
        """Time waiting before being scheduled."""
        return self.scheduled_ms - self.arrival_ms

    @property
    def ttft_ms(self) -> float:
        """Time to first token."""
        return self.first_token_ms - self.arrival_ms

    @property
    def itl_ms(self) -> float:
        """Mean time between its output tokens (0 for a one-token request)."""
        return (self.finish_ms - self.first_token_ms) / (self.out_tokens - 1) if self.out_tokens > 1 else 0.0

    @property
    def e2e_ms(self) -> float:
        """Time from arrival to the last token."""
        return self.finish_ms - self.arrival_ms


class _Request:
    """A request in flight: mutable bookkeeping, private to the replica."""

    __slots__ = ("arrival", "computed", "first_token", "id", "in_tokens", "out_tokens", "prefilled_at", "scheduled")

    def __init__(self, rid: int, arrival: float, in_tokens: int, out_tokens: int) -> None:
        self.id = rid
        self.arrival = arrival
        self.in_tokens = in_tokens
        self.out_tokens = out_tokens
        self.computed = 0
        self.scheduled = math.nan
        self.first_token = math.nan
        self.prefilled_at = 0

    def record(self, finish: float) -> RequestRecord:
        return RequestRecord(
            self.id, self.arrival, self.scheduled, self.first_token, finish, self.in_tokens, self.out_tokens
        )


class Replica:
    """One simulated vLLM replica; drive it with ``submit`` and ``advance_to``."""

    def __init__(self, engine: EngineConfig, start_ms: float = 0.0) -> None:
        self.engine = engine
        self._now = start_ms  # the time the replica has been advanced to
        self._free_at = start_ms  # end of the last iteration started
        self._iteration = 0  # index of the next iteration
        self._waiting: deque[_Request] = deque()
        self._prefilling: list[_Request] = []
        self._decoding: dict[int, _Request] = {}
        self._finishing: list[tuple[int, int]] = []  # heap of (iteration of its last token, request id)
        self._context_base = 0  # sum over decoding requests of (in_tokens - prefilled_at)
        self._done: list[tuple[float, int, RequestRecord]] = []  # heap of finished, not yet returned
        self._next_id = 0
        self._last_arrival = -math.inf
        self._step_end = -math.inf  # end of the last iteration that took prompt tokens
        self.rejected = 0
        """Arrivals turned away because the waiting queue was full."""
        self.iterations = 0
        """Iterations run so far."""
        self.batch_ms = 0.0
        """Integral over time of the number of requests in the running batch (ms)."""
        self.prompt_tokens = 0
        """Prompt tokens computed so far."""
        self.generation_tokens = 0
        """Output tokens produced so far."""

    @property
    def now_ms(self) -> float:
        """The time the replica has been advanced to."""
        return self._now

    @property
    def num_running(self) -> int:
        """Requests in the batch (prefilling or decoding)."""
        return len(self._prefilling) + len(self._decoding)

    @property
    def num_waiting(self) -> int:
        """Requests submitted and not yet admitted to the batch."""
        return len(self._waiting)

    @property
    def kv_cache_tokens(self) -> int:
        """Tokens held in the KV cache by the requests in the batch (prompt computed plus output so far)."""
        decoding = sum(self.generated(rid) + r.in_tokens for rid, r in self._decoding.items())
        return decoding + sum(r.computed for r in self._prefilling)

    def generated(self, request_id: int) -> int:
        """Output tokens of a request in the batch produced by the time the replica was advanced to.

        0 for a request waiting or still in its prompt, and for one already returned by :meth:`advance_to`
        (its record says all). Every iteration booked but the last has ended by then.
        """
        request = self._decoding.get(request_id)
        if request is None:  # finishing in the last iteration booked, or not decoding
            at, record = next(((at, r) for at, rid, r in self._done if rid == request_id), (None, None))
            return 0 if record is None or at is None else record.out_tokens - (1 if at > self._now else 0)
        ended = self._iteration - (1 if self._free_at > self._now else 0)
        return max(0, min(request.out_tokens, ended - request.prefilled_at))

    def next_event_ms(self) -> float:
        """When, without new arrivals, :meth:`advance_to` next has something to report; inf when idle.

        That is the earliest of: a finish already booked, the end of a booked iteration that took prompt
        tokens (first tokens), the start of the next iteration when it takes prompt tokens (its end is
        known only once it starts), and the end of the iteration that finishes the next decoding request.
        A driver that advances to these times (and to arrivals) sees every first token and finish on time.
        """
        times = [self._done[0][0]] if self._done else []
        if self._step_end > self._now:
            times.append(self._step_end)
        if not self._prefilling and not self._decoding:
            if self._waiting:
                times.append(max(self._free_at, self._waiting[0].arrival))
        elif self._prefilling or self._admissible(self._free_at):
            times.append(self._free_at)
        else:
            engine, decoding = self.engine, len(self._decoding)
            a = engine.alpha + engine.beta * decoding + engine.gamma * (self._context_base + decoding * self._iteration)
            b = engine.gamma * decoding
            j = self._finishing[0][0] - self._iteration + 1
            times.append(self._free_at + j * a + b * j * (j - 1) / 2)
        return min(times, default=math.inf)

    def submit(self, arrival_ms: float, in_tokens: int, out_tokens: int) -> int | None:
        """Add a request arriving at ``arrival_ms``; its id, or None when the waiting queue is full.

        Arrivals must come in time order and not before the time the replica was advanced to.
        """
        if not arrival_ms >= max(self._now, self._last_arrival):
            raise ValueError(
                f"arrival {arrival_ms} ms is before the replica time {self._now} ms or the previous arrival"
            )
        if in_tokens < 1 or out_tokens < 1:
            raise ValueError(f"a request needs at least 1 input and 1 output token (got {in_tokens}, {out_tokens})")
        self._last_arrival = arrival_ms
        limit = self.engine.max_queue
        if limit is not None and len(self._waiting) >= limit:
            self.rejected += 1
            return None
        rid = self._next_id
        self._next_id += 1
        self._waiting.append(_Request(rid, arrival_ms, int(in_tokens), int(out_tokens)))
        return rid

    def advance_to(self, t_ms: float) -> list[RequestRecord]:
        """Run every iteration that starts at or before ``t_ms``; the requests finished by then, in order.

        ``math.inf`` runs until every submitted request has finished.
        """
        if t_ms < self._now:
            raise ValueError(f"cannot go back in time from {self._now} ms to {t_ms} ms")
        while True:
            if not self._prefilling and not self._decoding:
                if not self._waiting:
                    break
                self._free_at = max(self._free_at, self._waiting[0].arrival)
            if self._free_at > t_ms:
                break
            if self._prefilling or self._admissible(self._free_at):
                self._step()
            else:
                self._decode_run(t_ms)
        if math.isfinite(t_ms):
            self._now = t_ms
        out = []
        while self._done and self._done[0][0] <= t_ms:
            out.append(heapq.heappop(self._done)[2])
        if not math.isfinite(t_ms) and out:
            self._now = max(self._now, out[-1].finish_ms)
        return out

    def _admissible(self, start: float) -> bool:
        """Whether a waiting request could join an iteration starting at ``start``."""
        return bool(self._waiting) and self._waiting[0].arrival <= start and self.num_running < self.engine.max_num_seqs

    def _step(self) -> None:
        """One iteration with prompt chunks in it."""
        engine = self.engine
        start, index = self._free_at, self._iteration
        decoding = len(self._decoding)
        budget = engine.max_batched_tokens - decoding
        tokens, kv_read = decoding, self._context_base + decoding * index
        chunks: list[tuple[_Request, int]] = []
        for request in self._prefilling:
            if budget == 0:
                break
            size = min(request.in_tokens - request.computed, budget)
            chunks.append((request, size))
            budget -= size
        while budget > 0 and self._admissible(start):
            request = self._waiting.popleft()
            request.scheduled = start
            self._prefilling.append(request)
            size = min(request.in_tokens, budget)
            chunks.append((request, size))
            budget -= size
        for request, size in chunks:
            tokens += size
            kv_read += request.computed + size
        end = start + engine.alpha + engine.beta * tokens + engine.gamma * kv_read
        self._step_end = end
        self.batch_ms += (decoding + len(chunks)) * (end - start)
        self.prompt_tokens += tokens - decoding
        self.generation_tokens += decoding
        for request, size in chunks:
            request.computed += size
            if request.computed < request.in_tokens:
                continue
            request.first_token = end
            self.generation_tokens += 1
            if request.out_tokens == 1:
                self._finish(request, end)
            else:
                request.prefilled_at = index
                self._decoding[request.id] = request
                self._context_base += request.in_tokens - index
                heapq.heappush(self._finishing, (index + request.out_tokens - 1, request.id))
        self._prefilling = [r for r in self._prefilling if r.computed < r.in_tokens]
        self._close(1, lambda _: end)

    def _decode_run(self, t_ms: float) -> None:
        """Iterations of decoding requests only, up to the next finish, admission or ``t_ms``.

        With D requests decoding, iteration i from now takes a + b i ms (the KV cache grows by D tokens
        per iteration), so the end of the j-th is start + j a + b j (j - 1) / 2.
        """
        engine = self.engine
        start, index = self._free_at, self._iteration
        decoding = len(self._decoding)
        a = engine.alpha + engine.beta * decoding + engine.gamma * (self._context_base + decoding * index)
        b = engine.gamma * decoding

        def end(j: int) -> float:
            return start + j * a + b * j * (j - 1) / 2

        def first_ending_after(t: float, strictly: bool) -> int:
            """The least j >= 1 whose end is >= t (> t when ``strictly``)."""
            if t - start <= 0:
                return 1
            j = max(1, math.ceil(2 * (t - start) / (a - b / 2 + math.sqrt((a - b / 2) ** 2 + 2 * b * (t - start)))))
            while end(j) < t or (strictly and end(j) == t):
                j += 1
            while j > 1 and (end(j - 1) > t or (not strictly and end(j - 1) == t)):
                j -= 1
            return j

        count = self._finishing[0][0] - index + 1
        if self._waiting and self.num_running < engine.max_num_seqs:
            count = min(count, first_ending_after(self._waiting[0].arrival, strictly=False))
        if math.isfinite(t_ms):
            count = min(count, first_ending_after(t_ms, strictly=True))
        self.batch_ms += decoding * (end(count) - start)
        self.generation_tokens += decoding * count
        self._close(count, end)

    def _close(self, count: int, end_of: Callable[[int], float]) -> None:
        """Book ``count`` iterations (the j-th ends at ``end_of(j)``); finish requests whose last token they made."""
        last = self._iteration + count - 1
        while self._finishing and self._finishing[0][0] <= last:
            iteration, rid = heapq.heappop(self._finishing)
            request = self._decoding.pop(rid)
            self._context_base -= request.in_tokens - request.prefilled_at
            self._finish(request, end_of(iteration - self._iteration + 1))
        self._free_at = end_of(count)
        self._iteration += count
        self.iterations += count

    def _finish(self, request: _Request, at: float) -> None:
        heapq.heappush(self._done, (at, request.id, request.record(at)))
