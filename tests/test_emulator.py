"""Tests of the emulated vLLM server: its OpenAI API, health, metrics and timing against the simulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from inferno.loadgen import Request, run_load, summarize
from inferno.sim import EngineConfig, Lengths, simulate
from inferno.sim.emulator import EmulatedPod, EmulatedService, EmulatorConfig, EmulatorHost
from inferno.sim.exposition import parse

MODEL = "tiny-llama"
ENGINE = EngineConfig(alpha=10.0, beta=0.1, gamma=0.01, max_num_seqs=4)
REQUIRED = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:request_success_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:num_preemptions_total",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:inter_token_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:request_queue_time_seconds_bucket",
    "vllm:request_prompt_tokens_sum",
    "vllm:request_generation_tokens_count",
    "vllm:request_prefill_time_seconds_sum",
    "vllm:request_decode_time_seconds_sum",
    "vllm:request_time_per_output_token_seconds_sum",
}


class Served:
    """An emulated service on a port of an in-process host."""

    def __init__(self, host: EmulatorHost, service: EmulatedService, url: str) -> None:
        self.host, self.service, self.url = host, service, url

    def add_pod(self, config: EmulatorConfig, **labels: str) -> EmulatedPod:
        """Start a pod of ``config`` with these extra metric labels."""
        pod = EmulatedPod(config, labels=labels)
        self.host.call(lambda: self.service.add(pod))
        return pod

    def metrics(self) -> dict[str, float]:
        """Sample name (with sorted labels but model_name/engine) -> value."""
        samples = parse(httpx.get(self.url + "/metrics").text)
        out = {}
        for s in samples:
            extra = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model_name", "engine"))
            out[s.name + (f"{{{extra}}}" if extra else "")] = s.value
        return out


@pytest.fixture
def served() -> Iterator[Served]:
    """An emulated service of MODEL with no pods yet, on a free port."""
    host = EmulatorHost()
    service = EmulatedService(MODEL)
    yield Served(host, service, host.serve(service))
    host.close()


def _events(response: httpx.Response) -> list[dict[str, object] | str]:
    """The SSE ``data:`` payloads of a response, JSON-decoded except ``[DONE]``."""
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    assert all(b.startswith("data: ") for b in blocks), blocks[:3]
    return [b[6:] if b[6:] == "[DONE]" else json.loads(b[6:]) for b in blocks]


def test_streamed_completion_is_well_formed(served: Served) -> None:
    """Streaming: one SSE event per token, finish_reason on the last, a usage event, then [DONE]."""
    served.add_pod(EmulatorConfig(MODEL, ENGINE, time_scale=20))
    body = {"model": MODEL, "prompt": "one two three four five", "max_tokens": 7, "stream": True}
    response = httpx.post(served.url + "/v1/completions", json=body | {"stream_options": {"include_usage": True}})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[-1] == "[DONE]"
    tokens = [e for e in events[:-2] if isinstance(e, dict)]
    assert len(tokens) == 7 and len({e["id"] for e in tokens}) == 1
    assert all(e["object"] == "text_completion" and e["model"] == MODEL for e in tokens)
    assert "".join(e["choices"][0]["text"] for e in tokens) == " tok" * 7  # type: ignore[index]
    assert [e["choices"][0]["finish_reason"] for e in tokens] == [None] * 6 + ["length"]  # type: ignore[index]
    usage = events[-2]
    assert isinstance(usage, dict) and usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_chat_and_non_streaming_responses_are_well_formed(served: Served) -> None:
    """Chat streams deltas (role first); non-streaming bodies carry the text, finish reason and usage."""
    served.add_pod(EmulatorConfig(MODEL, ENGINE, time_scale=20))
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ]
    chat = {"model": MODEL, "messages": messages, "max_completion_tokens": 4}
    events = _events(httpx.post(served.url + "/v1/chat/completions", json=chat | {"stream": True}))
    deltas = [e["choices"][0]["delta"] for e in events if isinstance(e, dict)]  # type: ignore[index]
    assert deltas[0] == {"role": "assistant", "content": " tok"} and len(deltas) == 4
    assert all(e["object"] == "chat.completion.chunk" for e in events if isinstance(e, dict))
    whole = httpx.post(served.url + "/v1/chat/completions", json=chat).json()
    assert whole["object"] == "chat.completion" and whole["choices"][0]["message"]["content"] == " tok" * 4
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    plain = httpx.post(served.url + "/v1/completions", json={"model": MODEL, "prompt": [5, 6, 7, 8]}).json()
    assert plain["object"] == "text_completion" and plain["choices"][0]["finish_reason"] == "length"
    assert plain["usage"] == {"prompt_tokens": 4, "completion_tokens": 16, "total_tokens": 20}, "default max_tokens"
    models = httpx.get(served.url + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert httpx.post(served.url + "/tokenize", json={"model": MODEL, "prompt": "a b c"}).json()["count"] == 3


def test_stream_interval_groups_tokens(served: Served) -> None:
    """vLLM's stream_interval > 1: fewer events, the same tokens."""
    served.add_pod(EmulatorConfig(MODEL, ENGINE, time_scale=1))
    body = {"model": MODEL, "prompt": "x", "max_tokens": 40, "stream": True, "stream_interval": 8}
    events = [e for e in _events(httpx.post(served.url + "/v1/completions", json=body)) if isinstance(e, dict)]
    assert "".join(e["choices"][0]["text"] for e in events) == " tok" * 40  # type: ignore[index]
    assert 2 <= len(events) < 40


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "other", "prompt": "x"}, 404),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400),
        ({"model": MODEL, "prompt": "x", "n": 2}, 400),
        ({"model": MODEL, "prompt": {"x": 1}}, 400),
        ({"model": MODEL, "prompt": "x", "max_tokens": 9000}, 400),
        ([1, 2], 400),
    ],
)
def test_bad_requests_get_openai_errors(served: Served, body: object, status: int) -> None:
    """Unknown model, bad max_tokens, n > 1, bad prompt, too long, not an object: an error body with its status."""
    served.add_pod(EmulatorConfig(MODEL, ENGINE, time_scale=20))
    response = httpx.post(served.url + "/v1/completions", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == status and response.json()["error"]["message"]


def test_health_is_503_until_the_start_up_delay_has_passed(served: Served) -> None:
    """/health and completions answer 503 during start-up (2 emulated s at x4 = 0.5 s), then 200."""
    start = time.monotonic()
    served.add_pod(EmulatorConfig(MODEL, ENGINE, startup_s=2.0, time_scale=4))
    assert httpx.get(served.url + "/health").status_code == 503
    assert httpx.post(served.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}).status_code == 503
    while httpx.get(served.url + "/health").status_code == 503:
        time.sleep(0.02)
    assert time.monotonic() - start >= 0.5, "never ready early (late only by the polling on a busy machine)"
    assert httpx.post(served.url + "/v1/completions", json={"model": MODEL, "prompt": "x"}).status_code == 200


def test_metrics_have_vllm_names_and_exact_lone_request_times(served: Served) -> None:
    """/metrics: vLLM V1 names and labels; requests sent one at a time have the simulator's lone-request times."""
    served.add_pod(EmulatorConfig(MODEL, ENGINE, time_scale=10), namespace="llm", pod="chat-abc12-x1")
    for _ in range(3):
        httpx.post(
            served.url + "/v1/completions", json={"model": MODEL, "prompt": " ".join(["w"] * 100), "max_tokens": 5}
        )
    text = httpx.get(served.url + "/metrics").text
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in text
    samples = parse(text)
    assert {s.name for s in samples} >= REQUIRED
    assert all(s.labels["model_name"] == MODEL and s.labels["engine"] == "0" for s in samples)
    assert all(s.labels["namespace"] == "llm" and s.labels["pod"] == "chat-abc12-x1" for s in samples)
    m = served.metrics()
    labels = "namespace=llm,pod=chat-abc12-x1"
    assert m[f"vllm:request_success_total{{finished_reason=length,{labels}}}"] == 3
    assert m[f"vllm:request_success_total{{finished_reason=stop,{labels}}}"] == 0
    assert m[f"vllm:prompt_tokens_total{{{labels}}}"] == 300
    assert m[f"vllm:generation_tokens_total{{{labels}}}"] == 15
    assert m[f"vllm:request_prompt_tokens_sum{{{labels}}}"] == 300
    ttft_ms = 10 + 0.1 * 100 + 0.01 * 100  # one prefill iteration, as the simulator's own test has it
    itl_ms = sum(10 + 0.1 + 0.01 * (100 + g) for g in range(1, 5)) / 4
    ttft = (
        m[f"vllm:time_to_first_token_seconds_sum{{{labels}}}"]
        / m[f"vllm:time_to_first_token_seconds_count{{{labels}}}"]
    )
    itl = (
        m[f"vllm:inter_token_latency_seconds_sum{{{labels}}}"]
        / m[f"vllm:inter_token_latency_seconds_count{{{labels}}}"]
    )
    assert ttft == pytest.approx(ttft_ms / 1000 / 10, rel=1e-9), "wall-clock seconds at time scale 10"
    assert itl == pytest.approx(itl_ms / 1000 / 10, rel=1e-9)
    assert m[f"vllm:inter_token_latency_seconds_count{{{labels}}}"] == 12
    assert m[f"vllm:request_queue_time_seconds_sum{{{labels}}}"] == 0.0
    assert m[f"vllm:num_requests_running{{{labels}}}"] == 0 and m[f"vllm:kv_cache_usage_perc{{{labels}}}"] == 0


def test_max_num_seqs_caps_the_batch_and_the_rest_wait(served: Served) -> None:
    """Six requests at once on max_num_seqs 2: 2 running and 4 waiting, then all finish with queue time."""
    config = EmulatorConfig(MODEL, EngineConfig(alpha=10.0, beta=0.1, gamma=0.01, max_num_seqs=2), time_scale=1)
    pod = served.add_pod(config)
    flights = served.host.call(lambda: [pod.submit(50, 200, stream=False) for _ in range(6)])
    m = served.metrics()
    assert (m["vllm:num_requests_running"], m["vllm:num_requests_waiting"]) == (2, 4)
    assert m["vllm:kv_cache_usage_perc"] > 0
    deadline = time.monotonic() + 30
    while not all(f.done for f in flights) and time.monotonic() < deadline:
        time.sleep(0.05)
    records = [f.record for f in flights]
    assert all(r is not None for r in records)
    queued = sorted(r.queue_ms for r in records if r is not None)
    assert max(queued[:2]) < 50 and min(queued[2:]) > 1000, "2 start within an iteration, 4 wait for a slot (> 1 s)"
    assert served.metrics()["vllm:request_success_total{finished_reason=length}"] == 6


def test_a_service_spreads_requests_and_drains_a_retired_pod(served: Served) -> None:
    """Idle pods take requests in turn, a busy one is passed over; a retired pod leaves /metrics once drained."""
    config = EmulatorConfig(MODEL, ENGINE, time_scale=20)
    a = served.add_pod(config, pod="a-1-1")
    b = served.add_pod(config, pod="b-1-1")
    for _ in range(4):
        httpx.post(served.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
    m = served.metrics()
    assert m["vllm:request_success_total{finished_reason=length,pod=a-1-1}"] == 2
    assert m["vllm:request_success_total{finished_reason=length,pod=b-1-1}"] == 2
    long = served.host.call(lambda: a.submit(10, 2000, stream=False))  # a is busy for ~1 s
    httpx.post(served.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
    assert served.metrics()["vllm:request_success_total{finished_reason=length,pod=b-1-1}"] == 3
    draining = served.host.call(lambda: (served.service.retire(a), a in served.service.pods, long.done)[1:])
    assert draining == (True, False), "a stays (and reports) while its request runs"
    httpx.post(served.url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2})
    while not long.done:
        time.sleep(0.02)
    m = served.metrics()
    assert "vllm:request_success_total{finished_reason=length,pod=a-1-1}" not in m
    assert m["vllm:request_success_total{finished_reason=length,pod=b-1-1}"] == 4
    assert served.host.call(lambda: served.service.pods) == [b]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmulatorProcess:
    """``inferno emulate-vllm`` in a subprocess."""

    def __init__(self, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "inferno", "emulate-vllm", "--port", str(self.port), *args]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait for /health to answer 200."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the emulator did not start: {self.process.stderr.read() if self.process.stderr else ''}"
                )
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the process."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


LATENCY_ENGINE = EngineConfig(alpha=20.0, beta=0.2, gamma=0.0005, max_num_seqs=16)
SCALE = 2.0


def test_client_latency_matches_the_offline_simulator() -> None:
    """At a fixed Poisson load, client-side (and /metrics) mean TTFT and ITL are within 5% of simulate()."""
    e = LATENCY_ENGINE
    emulator = EmulatorProcess(
        "--model", MODEL, "--alpha", str(e.alpha), "--beta", str(e.beta), "--gamma", str(e.gamma),
        "--max-num-seqs", str(e.max_num_seqs), "--time-scale", str(SCALE),
    )  # fmt: skip
    try:
        emulator.wait_healthy()
        rng = np.random.default_rng(11)
        rate_rps, n, in_tokens, out_tokens = 3.0, 120, 1024, 64  # emulated req/s: ~13 of 16 slots busy
        arrivals_ms = np.cumsum(rng.exponential(1000 / rate_rps, n))
        plan = [Request(float(t) / 1000 / SCALE, in_tokens, out_tokens) for t in arrivals_ms]
        results = run_load(emulator.url, MODEL, plan, timeout_s=60, stream_interval=8)
        served = {s.name: s.value for s in parse(httpx.get(emulator.url + "/metrics").text)}
    finally:
        emulator.close()
    summary = summarize(results)
    assert summary.ok == n and summary.in_tokens == in_tokens and summary.out_tokens == out_tokens
    reference = simulate(
        e,
        in_tokens=Lengths(in_tokens, "constant"),
        out_tokens=Lengths(out_tokens, "constant"),
        arrivals_ms=list(arrivals_ms),
        warmup=0.0,
        cooldown=0.0,
    )
    assert reference.in_service > 8, "requests share the batch and queue"
    assert summary.ttft_ms is not None and summary.itl_ms is not None
    errors = {
        "client TTFT": summary.ttft_ms * SCALE / reference.ttft.mean - 1,
        "client ITL": summary.itl_ms * SCALE / reference.itl.mean - 1,
        "/metrics TTFT": _mean_ms(served, "vllm:time_to_first_token_seconds") * SCALE / reference.ttft.mean - 1,
        "/metrics ITL": _mean_ms(served, "vllm:inter_token_latency_seconds") * SCALE / reference.itl.mean - 1,
    }
    print("emulator vs simulator:", ", ".join(f"{k} {v:+.2%}" for k, v in errors.items()))
    assert all(abs(v) < 0.05 for v in errors.values()), errors


def _mean_ms(samples: dict[str, float], histogram: str) -> float:
    return 1000 * samples[histogram + "_sum"] / samples[histogram + "_count"]


def test_cli_rejects_bad_parameters() -> None:
    """A negative parameter or time scale is a one-line error and exit 1."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferno",
            "emulate-vllm",
            "--model",
            MODEL,
            "--alpha",
            "-1",
            "--beta",
            "0.1",
            "--gamma",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"INFERNO_LOG_FORMAT": "console"},
    )
    assert result.returncode == 1 and result.stderr.startswith("error:") and "alpha" in result.stderr
