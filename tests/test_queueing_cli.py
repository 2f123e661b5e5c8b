"""Tests of ``inferno analyze``: one replica through a queue model from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from inferno.cli import app

runner = CliRunner()
EXAMPLE = ["--param", "alpha=12", "--param", "beta=0.05", "--param", "gamma=0.0005"]
WORKLOAD = ["--in-tokens", "128", "--out-tokens", "512", "--max-batch", "48"]


def test_analyze_at_a_rate_prints_the_metrics() -> None:
    """--rate gives the steady-state metrics as JSON, with Q = 10 N by default."""
    result = runner.invoke(app, ["analyze", *EXAMPLE, *WORKLOAD, "--rate", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("throughput_rps", "ttft_ms", "itl_ms", "wait_ms", "response_ms", "in_service", "max_rate_rps"):
        assert isinstance(data[key], float)
    assert data["queue_model"] == "iteration" and (data["max_batch"], data["max_queue"]) == (48, 480)
    assert data["throughput_rps"] == pytest.approx(2.0)
    assert data["max_rate_rps"] == pytest.approx(3.8609295, rel=1e-6)


def test_analyze_sizes_and_optimizes_the_batch() -> None:
    """Targets with --optimize-batch reproduce the design's public example."""
    args = ["analyze", *EXAMPLE, *WORKLOAD, "--max-queue", "128", "--target-ttft", "60", "--target-itl", "20"]
    result = runner.invoke(app, [*args, "--optimize-batch", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["max_batch"], data["feasible"], data["binding"]) == (48, True, "ttft")
    assert data["throughput_rps"] == pytest.approx(2.9494622, rel=1e-4)
    assert data["rate_rps"] == pytest.approx(2.9494622, rel=1e-4)
    assert "binds" in data["reason"]


def test_analyze_reports_an_infeasible_target() -> None:
    """An ITL target below the lowest-load ITL is infeasible: rate 0, no metrics, a reason."""
    result = runner.invoke(app, ["analyze", *EXAMPLE, *WORKLOAD, "--target-itl", "5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["feasible"], data["rate_rps"], data["ttft_ms"], data["binding"]) == (False, 0.0, None, "itl")
    assert "below" in data["reason"]


def test_analyze_prints_a_table() -> None:
    """Without --json the metrics come as a table."""
    result = runner.invoke(
        app, ["analyze", "--queue-model", "mm1k", *EXAMPLE, *WORKLOAD, "--rate", "1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "ttft_ms" in result.output and "alpha=12, beta=0.05, gamma=0.0005" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--param", "alpha=-1", "--param", "beta=0.05", "--param", "gamma=0.0005", "--rate", "1"],
            "alpha must be > 0",
        ),
        (["--param", "alpha=x", "--rate", "1"], "expected NAME=VALUE"),
        ([*EXAMPLE, "--queue-model", "mm2", "--rate", "1"], "unknown queue model 'mm2'"),
        ([*EXAMPLE, "--param", "delta=1", "--rate", "1"], "unknown delta"),
        ([*EXAMPLE, "--rate", "1", "--target-itl", "20"], "either --rate or"),
        ([*EXAMPLE], "either --rate or"),
        ([*EXAMPLE, "--rate", "1", "--optimize-batch"], "--optimize-batch needs a target"),
        ([*EXAMPLE, "--rate", "0"], "rate_rps must be > 0"),
    ],
)
def test_analyze_bad_input_exits_1_with_a_message(args: list[str], message: str) -> None:
    """Bad parameters or options exit 1 with the problem on stderr."""
    result = runner.invoke(app, ["analyze", *WORKLOAD, *args, "--json"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert message in result.stderr


def test_analyze_error_has_no_traceback() -> None:
    """Run as a program, a bad parameter gives exit 1, the message and no Python traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "inferno", "analyze", *WORKLOAD, "--param", "alpha=nan", "--rate", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
