"""The Prometheus metrics of one emulated vLLM engine, with vLLM V1's names, labels and buckets.

Every series carries ``model_name`` and ``engine`` (plus any extra labels, e.g. ``namespace`` and
``pod`` when one endpoint serves several emulated pods). Latencies are in seconds of wall-clock time,
as a client (and Prometheus' ``rate``) sees them. Per-request histograms are observed when the request
finishes; the inter-token latency is observed as the request's ``K - 1`` gaps, each taken as its mean gap,
so its sum and count are exact and its buckets approximate.
"""

from __future__ import annotations

from collections.abc import Mapping

from inferno.sim.exposition import Family, Histogram, Sample
from inferno.sim.replica import RequestRecord

__all__ = ["FINISHED_REASONS", "VllmMetrics", "token_buckets"]

FINISHED_REASONS = ("stop", "length", "abort")
"""vLLM's finished_reason label values; the emulator stops every request at max_tokens ("length")."""

TTFT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
TOKEN_LATENCY_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
TOKEN_LATENCY_BUCKETS += (2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0)
REQUEST_LATENCY_BUCKETS += (40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


def token_buckets(max_model_len: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_model_len``."""
    buckets: list[float] = []
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            value = step * magnitude
            if value > max_model_len:
                return tuple(buckets)
            buckets.append(float(value))
        magnitude *= 10


_HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": ("Time to first token (s).", TTFT_BUCKETS),
    "vllm:inter_token_latency_seconds": ("Time between output tokens (s).", TOKEN_LATENCY_BUCKETS),
    "vllm:request_time_per_output_token_seconds": ("Mean time per output token of a request (s).", None),
    "vllm:e2e_request_latency_seconds": ("End-to-end request latency (s).", REQUEST_LATENCY_BUCKETS),
    "vllm:request_queue_time_seconds": ("Time waiting before being scheduled (s).", REQUEST_LATENCY_BUCKETS),
    "vllm:request_inference_time_seconds": ("Time from scheduled to finished (s).", REQUEST_LATENCY_BUCKETS),
    "vllm:request_prefill_time_seconds": ("Time from scheduled to first token (s).", REQUEST_LATENCY_BUCKETS),
    "vllm:request_decode_time_seconds": ("Time from first to last token (s).", REQUEST_LATENCY_BUCKETS),
    "vllm:request_prompt_tokens": ("Prompt tokens per finished request.", ()),
    "vllm:request_generation_tokens": ("Output tokens per finished request.", ()),
    "vllm:request_params_max_tokens": ("max_tokens of finished requests.", ()),
}
"""Name -> (help, buckets); None = the token-latency buckets, () = the 1-2-5 token-count buckets."""


class VllmMetrics:
    """Counters, gauges and histograms of one engine; :meth:`families` gives them for exposition."""

    def __init__(self, model: str, *, time_scale: float = 1.0, max_model_len: int = 8192) -> None:
        self.model = model
        self.time_scale = time_scale
        counts = token_buckets(max_model_len)
        self.histograms = {
            name: Histogram(counts if buckets == () else TOKEN_LATENCY_BUCKETS if buckets is None else buckets)
            for name, (_, buckets) in _HISTOGRAMS.items()
        }
        self.finished = dict.fromkeys(FINISHED_REASONS, 0)
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.prompt_tokens = 0
        self.generation_tokens = 0

    def _seconds(self, ms: float) -> float:
        return ms / 1000.0 / self.time_scale

    def observe(self, record: RequestRecord) -> None:
        """Count a finished request (times in emulated ms, reported in wall-clock seconds)."""
        h = self.histograms
        self.finished["length"] += 1
        gaps = record.out_tokens - 1
        h["vllm:time_to_first_token_seconds"].observe(self._seconds(record.ttft_ms))
        if gaps > 0:
            itl = self._seconds(record.itl_ms)
            h["vllm:inter_token_latency_seconds"].observe(itl, gaps)
            h["vllm:request_time_per_output_token_seconds"].observe(itl)
        h["vllm:e2e_request_latency_seconds"].observe(self._seconds(record.e2e_ms))
        h["vllm:request_queue_time_seconds"].observe(self._seconds(record.queue_ms))
        h["vllm:request_inference_time_seconds"].observe(self._seconds(record.finish_ms - record.scheduled_ms))
        h["vllm:request_prefill_time_seconds"].observe(self._seconds(record.first_token_ms - record.scheduled_ms))
        h["vllm:request_decode_time_seconds"].observe(self._seconds(record.finish_ms - record.first_token_ms))
        h["vllm:request_prompt_tokens"].observe(record.in_tokens)
        h["vllm:request_generation_tokens"].observe(record.out_tokens)
        h["vllm:request_params_max_tokens"].observe(record.out_tokens)

    def families(self, extra_labels: Mapping[str, str] | None = None) -> list[Family]:
        """Every metric family with its samples, labelled model_name, engine and ``extra_labels``."""
        labels = {"model_name": self.model, "engine": "0", **(extra_labels or {})}

        def one(name: str, kind: str, help_text: str, value: float) -> Family:
            return Family(name, kind, help_text, (Sample(name, labels, float(value)),))

        families = [
            one("vllm:num_requests_running", "gauge", "Requests in the running batch.", self.running),
            one("vllm:num_requests_waiting", "gauge", "Requests waiting to be scheduled.", self.waiting),
            one("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage (1 = full).", self.kv_cache_usage),
            one("vllm:num_preemptions_total", "counter", "Preemptions (none: the KV cache is ample).", 0),
            one("vllm:prompt_tokens_total", "counter", "Prompt tokens computed.", self.prompt_tokens),
            one("vllm:generation_tokens_total", "counter", "Output tokens generated.", self.generation_tokens),
            Family(
                "vllm:request_success_total",
                "counter",
                "Finished requests by finish reason.",
                tuple(
                    Sample("vllm:request_success_total", {**labels, "finished_reason": reason}, float(count))
                    for reason, count in self.finished.items()
                ),
            ),
        ]
        for name, (help_text, _) in _HISTOGRAMS.items():
            families.append(Family(name, "histogram", help_text, self.histograms[name].samples(name, labels)))
        return families
