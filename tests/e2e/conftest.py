"""Fixtures of the end-to-end tests: a real vLLM server on the CPU, scraped by the session's real Prometheus.

One server (``--max-num-seqs 8``) and one calibration serve the whole session: the server takes ~30 s to
start and the calibration sweep ~3 minutes, so the tests share them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from inferno.cli import app
from tests.support.prometheus import PrometheusServer
from tests.support.vllm import MAX_BATCHED_TOKENS, VllmServer, vllm_python, write_tiny_llama

NS = "e2e"
DEPLOYMENT = "tiny-llama-cpu"
POD = f"{DEPLOYMENT}-5d8f9c7b6-x7k2p"
MAX_NUM_SEQS = 8
STEP_S = 12.0
"""Seconds of one calibration step."""
TIMINGS: dict[str, float] = {}
"""Seconds taken by the install, the server start and the calibration (printed at the end of the session)."""


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, prometheus: PrometheusServer) -> Iterator[VllmServer]:
    """A real vLLM server on 127.0.0.1 serving the tiny Llama, scraped as pod ``POD`` of namespace ``NS``."""
    started = time.monotonic()
    python = vllm_python()
    TIMINGS["install_s"] = time.monotonic() - started
    directory = tmp_path_factory.mktemp("vllm")
    model = write_tiny_llama(python, directory / "tiny-llama")
    server = VllmServer(python, model, MAX_NUM_SEQS, directory / "vllm.log")
    try:
        TIMINGS["server_start_s"] = server.wait_healthy()
        prometheus.add_target(server.address, {"namespace": NS, "pod": POD})
        prometheus.wait(
            lambda: bool(prometheus.query(f'vllm:request_success_total{{pod="{POD}"}}')), 30, "vLLM was not scraped"
        )
        yield server
    finally:
        prometheus.remove_target(server.address)
        server.close()
        print(f"\ne2e timings: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


@pytest.fixture(scope="session")
def calibration(vllm_server: VllmServer, prometheus: PrometheusServer) -> dict[str, Any]:
    """``inferno calibrate --json`` against the server, reading Prometheus: its parsed output."""
    started = time.monotonic()
    args = ["calibrate", "--url", vllm_server.url, "--prometheus", prometheus.url, "--json"]
    args += ["--max-num-seqs", str(MAX_NUM_SEQS), "--max-batched-tokens", str(MAX_BATCHED_TOKENS)]
    args += ["--step-seconds", str(STEP_S)]
    result = CliRunner().invoke(app, args)
    TIMINGS["calibration_s"] = time.monotonic() - started
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    out = Path(vllm_server.log).with_name("calibration.json")
    out.write_text(json.dumps(data, indent=1))
    print(f"\ncalibration ({TIMINGS['calibration_s']:.0f} s, in {out}): {json.dumps(data['params'])} {data['fit']}")
    return data
